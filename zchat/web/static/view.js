// DOM building. Every string from the wire goes in through textContent, never
// as markup: a message reading <img onerror=...> stays those characters.

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

export function clock(ts) {
  const when = typeof ts === "number" && Number.isFinite(ts) ? new Date(ts * 1000) : new Date();
  return when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

// A colour class per nick (12 of them in style.css): no inline style needed.
export function nickClass(nick) {
  let hash = 0;
  for (const ch of String(nick)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return `nick c${hash % 12}`;
}

// One log line: [time] parts... ; parts are [className, text] pairs.
export function line(kind, ts, parts, { history = false, mention = false } = {}) {
  const row = el("div", `line ${kind}`);
  if (history) {
    row.classList.add("history");
    row.dataset.history = "true";
  }
  if (mention) row.classList.add("mention");
  row.append(el("time", "ts", clock(ts)));
  for (const [className, text] of parts) {
    row.append(" ", el("span", className, text));
  }
  return row;
}

export function divider(text) {
  return el("div", "divider", text);
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}
