// The zchat page: a nick form, then one tab per room and per direct conversation.
// The gateway parses typed lines (the same /commands as the terminal UI).

import { Link } from "./connection.js";
import { clear, divider, el, line, nickClass } from "./view.js";

const $ = (id) => document.getElementById(id);

const state = {
  nick: null,
  convs: new Map(),
  current: null,
  everRegistered: false,
  again: false,
  registered: false,
  epoch: null,
  seen: new Set(),
  quit: false,
};

const STATES = {
  connected: ["ok", "connected"],
  registered: ["ok", "registered again"],
  silent: ["warn", "broker silent"],
  reconnecting: ["warn", "reconnecting"],
  refused: ["bad", "refused"],
};

const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const link = new Link(`${scheme}//${location.host}/ws`, {
  onOpen: () => {
    if (state.nick !== null) hello();
  },
  onMessage: (message) => receive(message),
  onClose: (event, wait) => closed(event, wait),
});

// ------------------------------------------------------------ conversations

function roomKey(room) {
  return `room:${room}`;
}

function dmKey(nick) {
  return `dm:${String(nick).toLowerCase()}`;
}

function conversation(key, kind, name) {
  let conv = state.convs.get(key);
  if (conv !== undefined) return conv;
  const log = el("div", "log");
  log.hidden = true;
  log.dataset.key = key;
  const tab = el("button", `tab ${kind}`);
  tab.type = "button";
  tab.setAttribute("role", "tab");
  tab.dataset.key = key;
  const label = el("span", "label", kind === "room" ? `#${name}` : `@${name}`);
  const unread = el("span", "badge unread");
  const mentions = el("span", "badge mention");
  unread.hidden = true;
  mentions.hidden = true;
  tab.append(label, unread, mentions);
  tab.addEventListener("click", () => select(key));
  conv = { key, kind, name, topic: "", users: [], unread: 0, mentions: 0, log, tab, label, badges: { unread, mentions }, earlier: false };
  state.convs.set(key, conv);
  $("tabs").append(tab);
  $("logs").append(log);
  if (state.current === null) select(key);
  return conv;
}

function remove(key) {
  const conv = state.convs.get(key);
  if (conv === undefined) return;
  conv.tab.remove();
  conv.log.remove();
  state.convs.delete(key);
  if (state.current === key) {
    state.current = null;
    const next = state.convs.keys().next();
    if (!next.done) select(next.value);
    else renderHeader();
  }
}

function select(key) {
  const conv = state.convs.get(key);
  if (conv === undefined) return;
  for (const other of state.convs.values()) {
    const active = other.key === key;
    other.log.hidden = !active;
    other.tab.classList.toggle("active", active);
    other.tab.setAttribute("aria-selected", active ? "true" : "false");
  }
  state.current = key;
  conv.unread = 0;
  conv.mentions = 0;
  renderBadges(conv);
  renderHeader();
  conv.log.scrollTop = conv.log.scrollHeight;
  $("input").focus();
}

function current() {
  return state.current === null ? undefined : state.convs.get(state.current);
}

function renderBadges(conv) {
  conv.badges.unread.textContent = String(conv.unread);
  conv.badges.unread.hidden = conv.unread === 0;
  conv.badges.mentions.textContent = `@${conv.mentions}`;
  conv.badges.mentions.hidden = conv.mentions === 0;
}

function renderHeader() {
  const conv = current();
  $("title").textContent = conv === undefined ? "" : conv.label.textContent;
  $("topic").textContent = conv === undefined ? "" : conv.kind === "room" ? conv.topic : "direct messages";
  $("me").textContent = state.nick ?? "";
  const members = $("members");
  clear(members);
  const users = conv === undefined ? [] : conv.kind === "room" ? conv.users : [state.nick, conv.name];
  $("count").textContent = conv === undefined ? "" : `(${users.length})`;
  for (const nick of [...users].sort((a, b) => a.localeCompare(b))) {
    const item = el("li", "member");
    const button = el("button", nickClass(nick), nick);
    button.type = "button";
    button.title = nick === state.nick ? "you" : `talk to ${nick} directly`;
    if (nick !== state.nick) button.addEventListener("click", () => select(conversation(dmKey(nick), "dm", nick).key));
    item.append(button);
    members.append(item);
  }
}

// Append a line; counts it as unread (and as a mention) when not looked at.
function append(conv, row, { count = false, mention = false } = {}) {
  const log = conv.log;
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.append(row);
  if (atBottom || row.classList.contains("own")) log.scrollTop = log.scrollHeight;
  if (conv.key !== state.current && count) {
    conv.unread += 1;
    if (mention) conv.mentions += 1;
    renderBadges(conv);
  }
}

function notice(text, kind = "notice", conv = current()) {
  if (conv === undefined) return;
  append(conv, line(kind, null, [["text", text]]));
}

function mentions(text) {
  if (!state.nick || typeof text !== "string") return false;
  return text.toLowerCase().includes(state.nick.toLowerCase());
}

// ------------------------------------------------------------ from the gateway

function receive(message) {
  switch (message.type) {
    case "welcome":
      welcome(message);
      break;
    case "rooms":
      applyRooms(message);
      if (typeof message.focus === "string") select(roomKey(message.focus));
      break;
    case "event":
      if (message.event && typeof message.event === "object") onEvent(message.event);
      break;
    case "info":
      // A failed typed line: the same words the terminal shows, in red.
      if (message.error === true) notice(`!!! ${message.text}`, "error");
      else notice(message.text, "notice");
      break;
    case "error":
      onError(message);
      break;
    case "query":
      // /query NICK: open (or show) the direct conversation with NICK.
      if (typeof message.to === "string") select(conversation(dmKey(message.to), "dm", message.to).key);
      break;
    case "left":
      if (typeof message.room === "string") remove(roomKey(message.room));
      if (typeof message.to === "string") remove(dmKey(message.to));
      break;
    case "self":
      if (typeof message.nick === "string") state.nick = message.nick;
      renderHeader();
      break;
    case "quit":
      state.quit = true;
      link.stop();
      showState("bad", "left the chat");
      notice("You left the chat. Reload the page to come back.", "error");
      $("input").disabled = true;
      break;
    default:
      break;
  }
}

function welcome(message) {
  const again = state.everRegistered;
  state.again = again;
  state.everRegistered = true;
  state.registered = true;
  link.settled();
  $("login").hidden = true;
  $("chat").hidden = false;
  applyRooms(message);
  showState("ok", again ? "registered again" : "connected");
  if (again) notice(`registered again as ${state.nick}`);
  $("input").focus();
}

function applyRooms(message) {
  if (typeof message.nick === "string") state.nick = message.nick;
  if (message.epoch !== state.epoch) {
    // seq numbers start over with a new broker history: forget what we saw.
    state.epoch = message.epoch;
    state.seen.clear();
  }
  const rooms = message.rooms && typeof message.rooms === "object" ? message.rooms : {};
  for (const [name, info] of Object.entries(rooms)) {
    const conv = conversation(roomKey(name), "room", name);
    conv.topic = typeof info.topic === "string" ? info.topic : "";
    conv.users = Array.isArray(info.users) ? info.users.filter((u) => typeof u === "string") : [];
  }
  renderHeader();
}

function onError(message) {
  const text = `${message.code}: ${message.text}`;
  if (message.during === "hello" || !state.registered) {
    if (!state.everRegistered) {
      // The first registration: the nick form says what went wrong.
      $("nick-error").textContent = text;
      $("nick-submit").disabled = false;
      $("nick").focus();
      return;
    }
    // Coming back after an outage: the old session may hold the nick a few
    // seconds more, until the broker times it out; try again with backoff.
    showState("warn", `retrying (${message.code})`);
    link.restart();
    return;
  }
  notice(`!!! ${text}`, "error");
}

function onEvent(ev) {
  if (typeof ev.room === "string" && Number.isInteger(ev.seq)) {
    const id = `${ev.room}#${ev.seq}`;
    // Backlog fetched again after the gateway restarted: already shown.
    if (state.seen.has(id)) return;
    state.seen.add(id);
  }
  const history = ev.history === true;
  const nick = typeof ev.nick === "string" ? ev.nick : "?";
  const room = typeof ev.room === "string" ? ev.room : null;
  const conv = room !== null ? state.convs.get(roomKey(room)) ?? conversation(roomKey(room), "room", room) : current();
  switch (ev.type) {
    case "msg": {
      const own = nick === state.nick;
      const mention = !own && mentions(ev.text);
      if (history) markEarlier(conv);
      const parts = ev.action ? [["star", "*"], [nickClass(nick), nick], ["text", ev.text]] : [[nickClass(nick), nick], ["text", ev.text]];
      const row = line(ev.action ? "msg action" : "msg", ev.ts, parts, { history, mention });
      if (own) row.classList.add("own");
      append(conv, row, { count: !own && !history, mention });
      break;
    }
    case "join":
      if (history) markEarlier(conv);
      else if (!conv.users.includes(nick)) conv.users.push(nick);
      append(conv, line("join", ev.ts, [["arrow", "-->"], [nickClass(nick), nick], ["text", `joined ${room}`]], { history }));
      break;
    case "leave": {
      if (history) markEarlier(conv);
      else conv.users = conv.users.filter((u) => u !== nick);
      const why = typeof ev.message === "string" && ev.message ? `${ev.reason}: ${ev.message}` : ev.reason;
      append(conv, line("leave", ev.ts, [["arrow", "<--"], [nickClass(nick), nick], ["text", `left ${room} (${why})`]], { history }));
      break;
    }
    case "topic":
      if (history) markEarlier(conv);
      else conv.topic = typeof ev.text === "string" ? ev.text : "";
      append(conv, line("topic", ev.ts, [[nickClass(nick), nick], ["text", `set the topic: ${ev.text}`]], { history }));
      break;
    case "nick":
      if (!history) {
        conv.users = conv.users.map((u) => (u === ev.old ? ev.new : u));
        if (ev.old === state.nick) state.nick = ev.new;
      } else markEarlier(conv);
      append(conv, line("nick", ev.ts, [["text", `${ev.old} is now known as ${ev.new}`]], { history }));
      break;
    case "dm":
      onDirect(ev);
      return;
    case "status": {
      let [level, label] = STATES[ev.state] ?? ["warn", String(ev.state)];
      // A new gateway's client starts "connected"; for the person it is a return.
      if (ev.state === "connected" && state.again) label = "registered again";
      state.registered = ev.state !== "reconnecting";
      showState(level, label);
      notice(`-!- ${ev.text}`);
      return;
    }
    case "missed":
      notice(`-!- ${ev.count} messages missed in ${room}`, "error", conv);
      return;
    case "error":
      notice(`!!! ${ev.code}: ${ev.reason}`, "error");
      if (ev.code === "replaced") {
        // Coming back would take the nick back, and the two would take turns for ever.
        state.quit = true;
        link.stop();
        showState("bad", "replaced");
        notice("This nick was taken over by another connection. Reload the page to come back.", "error");
      }
      return;
    default:
      return;
  }
  if (conv.key === state.current) renderHeader();
}

function onDirect(ev) {
  const own = ev.nick === state.nick && ev.to !== state.nick;
  const other = own ? ev.to : ev.nick;
  if (typeof other !== "string") return;
  const conv = conversation(dmKey(other), "dm", other);
  const parts = ev.action ? [["star", "*"], [nickClass(ev.nick), ev.nick], ["text", ev.text]] : [[nickClass(ev.nick), ev.nick], ["text", ev.text]];
  const row = line("msg dm", ev.ts, parts);
  if (own) row.classList.add("own");
  append(conv, row, { count: !own, mention: !own });
  if (own) select(conv.key);
}

function markEarlier(conv) {
  if (conv.earlier) return;
  conv.earlier = true;
  conv.log.append(divider("Earlier messages"));
}

// ------------------------------------------------------------ connection state

function showState(level, text) {
  const node = $("state");
  node.dataset.level = level;
  node.textContent = text;
  $("login-state").textContent = state.everRegistered ? "" : text;
}

function closed(event, wait) {
  state.registered = false;
  if (state.quit) return;
  if (wait === null) {
    const why = event.code === 1008 ? "the gateway refused this page" : "disconnected";
    showState("bad", why);
    if (!state.everRegistered) $("nick-error").textContent = why;
    return;
  }
  const seconds = (wait / 1000).toFixed(1);
  showState("warn", `gateway lost; retrying in ${seconds}s`);
  if (!state.everRegistered) {
    $("nick-submit").disabled = false;
    if (event.reason) $("nick-error").textContent = event.reason;
  } else if (event.code !== 4000) {
    notice(`-!- connection to the gateway lost; retrying in ${seconds}s`);
  }
}

function hello() {
  const rooms = [...state.convs.values()].filter((c) => c.kind === "room").map((c) => c.name);
  link.send({ type: "hello", nick: state.nick, rooms });
}

// ------------------------------------------------------------ the person

$("nick-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const nick = $("nick").value.trim();
  if (!nick) return;
  state.nick = nick;
  $("nick-error").textContent = "";
  $("nick-submit").disabled = true;
  if (link.open) hello();
  else link.connect();
});

$("input-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("input");
  const text = input.value;
  if (!text.trim()) return;
  const conv = current();
  const message = { type: "line", text };
  if (conv !== undefined && conv.kind === "dm") message.to = conv.name;
  else if (conv !== undefined) message.room = conv.name;
  if (!state.registered || !link.send(message)) {
    notice("!!! not connected: the line was not sent", "error");
    return;
  }
  input.value = "";
});

$("menu").addEventListener("click", () => {
  const shown = document.body.classList.toggle("show-sidebar");
  $("menu").setAttribute("aria-expanded", shown ? "true" : "false");
});
