// The WebSocket to the gateway, reopened with backoff until stop() is called.

const FIRST_DELAY = 500;
const MAX_DELAY = 10000;

export class Link {
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.ws = null;
    this.delay = FIRST_DELAY;
    this.timer = null;
    this.stopped = false;
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    this.stopped = false;
    clearTimeout(this.timer);
    this.timer = null;
    if (this.ws !== null) return;
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.addEventListener("open", () => this.handlers.onOpen());
    ws.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message !== null && typeof message === "object") this.handlers.onMessage(message);
    });
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      // 1008: the gateway refused us (origin); trying again cannot help.
      const retry = !this.stopped && event.code !== 1008;
      const wait = retry ? this.schedule() : null;
      this.handlers.onClose(event, wait);
    });
  }

  // The next attempt's delay (ms): doubled each time, with jitter so that
  // many pages do not all return to a restarted gateway at the same instant.
  schedule() {
    const wait = Math.round(this.delay * (0.8 + Math.random() * 0.4));
    this.delay = Math.min(this.delay * 2, MAX_DELAY);
    this.timer = setTimeout(() => this.connect(), wait);
    return wait;
  }

  // A registration succeeded: the next outage starts with short delays again.
  settled() {
    this.delay = FIRST_DELAY;
  }

  // Drop this socket and try again later (backoff applies).
  restart() {
    if (this.ws !== null) this.ws.close(4000, "retry");
  }

  send(message) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws !== null) this.ws.close(1000, "bye");
  }
}
