// Shared helpers for the pages: API calls with the session's CSRF token, formatting.

/** Has the job ended? The job JSON's `terminal` says so (the server's rule, shared/states.py). */
export const isTerminal = (job) => Boolean(job && job.terminal);

export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `request failed (HTTP ${status})`);
    this.status = status;
    this.code = err.code || `http_${status}`;
    this.field = err.field || null;
  }
}

/** fetch() a JSON API URL; unsafe methods carry the CSRF header. Throws ApiError. */
export async function api(url, { method = "GET", body = null, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrfToken();
  const res = await fetch(url, {
    method, body, signal, headers, credentials: "same-origin", cache: "no-store",
  });
  let data = null;
  const type = res.headers.get("Content-Type") || "";
  if (type.includes("json")) {
    try { data = await res.json(); } catch { data = null; }
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

/** Human time: "42 s", "3 min 5 s", "1 h 2 min". */
export function duration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

const rtf = typeof Intl !== "undefined" && Intl.RelativeTimeFormat
  ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }) : null;

/** "2 minutes ago" for an ISO time (absolute date past a week). */
export function ago(iso) {
  if (!iso) return "—";
  const t = new Date(iso);
  const diff = (t.getTime() - Date.now()) / 1000;
  const abs = Math.abs(diff);
  if (!rtf || abs > 7 * 86400) return t.toLocaleString();
  if (abs < 45) return rtf.format(Math.round(diff), "second");
  if (abs < 2700) return rtf.format(Math.round(diff / 60), "minute");
  if (abs < 86400) return rtf.format(Math.round(diff / 3600), "hour");
  return rtf.format(Math.round(diff / 86400), "day");
}

export function absTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

/** Loss values span many decades: 3 significant digits, exponent when large or tiny. */
export function num(v) {
  if (v == null || !Number.isFinite(v)) return "—";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-2)) return v.toExponential(2);
  return v.toLocaleString(undefined, { maximumSignificantDigits: 4 });
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
}

/** A poller that slows down while the tab is hidden and backs off on errors. */
export function poller(fn, { interval = 1000, hiddenInterval = 5000, maxBackoff = 15000 } = {}) {
  let timer = null;
  let stopped = false;
  let failures = 0;
  async function tick() {
    timer = null;
    if (stopped) return;
    let again = true;
    try {
      again = (await fn()) !== false;
      failures = 0;
    } catch (err) {
      failures += 1;
      console.warn("poll failed", err);
    }
    if (stopped || !again) { stopped = true; return; }
    const base = document.hidden ? hiddenInterval : interval;
    const wait = failures ? Math.min(maxBackoff, base * 2 ** failures) : base;
    timer = setTimeout(tick, wait);
  }
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !stopped && timer) { clearTimeout(timer); timer = setTimeout(tick, 0); }
  });
  return {
    start() { if (!timer && !stopped) timer = setTimeout(tick, 0); },
    stop() { stopped = true; if (timer) clearTimeout(timer); timer = null; },
    get failures() { return failures; },
    get stopped() { return stopped; },
  };
}

// ---- fleet banners ----------------------------------------------------------------------------

/** Show or hide the page's fleet banners to match the fleet now: random weights (demo),
 * weights that cannot load (jobs will fail), no worker online (jobs wait). Call it again to
 * follow the fleet (the dashboard does while it polls). skipRandom leaves the demo banner as
 * the page rendered it; wanted() is asked when the answer comes (false: the page has moved
 * on, leave the banners). A hint only: on an error the banners stay as they are. */
export async function showFleetBanners(url, { skipRandom = false, wanted = () => true } = {}) {
  let fleet;
  try { fleet = await api(url); } catch { return null; }
  if (!fleet || !wanted()) return null;
  if (!skipRandom) setBanner("fleet-banner", fleet.random_weights);
  setBanner("weights-banner", fleet.weights_unavailable);
  setBanner("workers-banner", !fleet.online);
  return fleet;
}

/** Hide fleet banners (by id), e.g. the ones about waiting jobs on a finished job's page. */
export function hideFleetBanners(...ids) {
  for (const id of ids) setBanner(id, false);
}

function setBanner(id, visible) {
  const node = document.getElementById(id);
  if (node) node.hidden = !visible;
  return node;
}
