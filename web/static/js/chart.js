// A small SVG line chart for the loss curve: total + content/style/tv, linear or log scale.
// No library: about what a dashboard needs and nothing more.

import { num } from "./common.js";

const NS = "http://www.w3.org/2000/svg";
export const SERIES = [
  { key: "loss", name: "total", cls: "s-total" },
  { key: "content", name: "content", cls: "s-content" },
  { key: "style", name: "style", cls: "s-style" },
  { key: "tv", name: "tv", cls: "s-tv" },
];

function svgEl(tag, attrs = {}) {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  return n;
}

function niceStep(range, target) {
  const raw = range / Math.max(1, target);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

/** Axis labels: 1e6 rather than 1.00e+6 for powers of ten; plain numbers otherwise. */
function tick(v, log) {
  if (log && v > 0) {
    const k = Math.log10(v);
    if (Math.abs(k - Math.round(k)) < 1e-9 && Math.abs(k) >= 3) return `1e${Math.round(k)}`;
  }
  if (Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3)) {
    return v.toExponential(1).replace("e+", "e").replace(".0e", "e");
  }
  return num(v);
}

export class LossChart {
  constructor(svg, { readout = null, total = 0 } = {}) {
    this.svg = svg;
    this.readout = readout;
    this.total = total; // iterations planned: the x axis spans them so the curve grows rightwards
    this.its = [];
    this.values = Object.fromEntries(SERIES.map((s) => [s.key, []]));
    this.visible = Object.fromEntries(SERIES.map((s) => [s.key, true]));
    this.log = true;
    this.cursor = null; // index of the hovered / keyboard-selected point
    this.pending = false;
    this.width = 640;
    this.height = 280;
    svg.setAttribute("role", "img");
    svg.setAttribute("tabindex", "0");
    svg.addEventListener("pointermove", (e) => this.#hover(e));
    svg.addEventListener("pointerleave", () => { this.cursor = null; this.schedule(); });
    svg.addEventListener("keydown", (e) => this.#key(e));
    if (typeof ResizeObserver !== "undefined") {
      new ResizeObserver(() => this.schedule()).observe(svg.parentElement);
    }
    this.schedule();
  }

  get pointCount() { return this.its.length; }

  add(entries) {
    let last = this.its.length ? this.its[this.its.length - 1] : -Infinity;
    for (const e of entries) {
      // a re-delivered job restarts at iteration 1, a resumed one after its checkpoint:
      // drop the points from there on (those iterations are computed again)
      if (e.iteration <= last) this.truncate(e.iteration);
      this.its.push(e.iteration);
      for (const s of SERIES) this.values[s.key].push(Number(e[s.key]));
      last = e.iteration;
    }
    if (entries.length) this.schedule();
  }

  /** Keep only the points before iteration `from`. */
  truncate(from) {
    let n = this.its.findIndex((it) => it >= from);
    if (n < 0) n = this.its.length;
    this.its.length = n;
    for (const s of SERIES) this.values[s.key].length = n;
  }

  clear() {
    this.its = [];
    for (const s of SERIES) this.values[s.key] = [];
  }

  setLog(on) { this.log = on; this.schedule(); }
  setVisible(key, on) { this.visible[key] = on; this.schedule(); }
  setTotal(total) { if (total && total !== this.total) { this.total = total; this.schedule(); } }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.render(); });
  }

  #layout() {
    const w = Math.max(260, Math.round(this.svg.parentElement.clientWidth || 640));
    this.width = w;
    this.height = w < 480 ? 220 : 280;
    this.pad = { l: 58, r: 12, t: 10, b: 28 };
  }

  #domain() {
    const n = this.its.length;
    const xMax = Math.max(this.total || 0, n ? this.its[n - 1] : 1, 2);
    let lo = Infinity;
    let hi = -Infinity;
    for (const s of SERIES) {
      if (!this.visible[s.key]) continue;
      for (const v of this.values[s.key]) {
        if (!Number.isFinite(v) || (this.log && v <= 0)) continue;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
    if (lo === Infinity) { lo = this.log ? 1 : 0; hi = this.log ? 10 : 1; }
    if (this.log) {
      lo = Math.log10(lo); hi = Math.log10(hi);
      const span = hi - lo || 1;
      lo -= span * 0.04; hi += span * 0.04;
    } else {
      lo = Math.min(0, lo);
      hi = hi === lo ? lo + 1 : hi * 1.05;
    }
    return { x0: 1, x1: xMax, y0: lo, y1: hi };
  }

  #scales(d) {
    const { l, r, t, b } = this.pad;
    const iw = this.width - l - r;
    const ih = this.height - t - b;
    const sx = (x) => l + ((x - d.x0) / (d.x1 - d.x0 || 1)) * iw;
    const sy = (v) => {
      const y = this.log ? Math.log10(v) : v;
      return t + ih - ((y - d.y0) / (d.y1 - d.y0 || 1)) * ih;
    };
    return { sx, sy, iw, ih };
  }

  render() {
    this.#layout();
    const { svg, width, height } = this;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.replaceChildren();
    const d = this.#domain();
    const { sx, sy, iw } = this.#scales(d);
    const { l, t, b } = this.pad;
    const axes = svgEl("g");
    // y grid + labels
    const yTicks = [];
    if (this.log) {
      // decades; with 1, 2 and 5 inside each one when the curve spans only a few
      const span = d.y1 - d.y0;
      const step = Math.max(1, Math.ceil(span / 5));
      const marks = span < 1.5 ? [1, 2, 5] : span < 3.5 ? [1, 3] : [1];
      for (let k = Math.floor(d.y0); k <= Math.ceil(d.y1); k += step) {
        for (const m of marks) {
          const v = m * 10 ** k;
          if (Math.log10(v) >= d.y0 && Math.log10(v) <= d.y1) yTicks.push(v);
        }
      }
    } else {
      const step = niceStep(d.y1 - d.y0, 5);
      for (let v = Math.ceil(d.y0 / step) * step; v <= d.y1; v += step) yTicks.push(v);
    }
    for (const v of yTicks) {
      const y = sy(v);
      axes.append(svgEl("line", { class: "grid-line", x1: l, x2: l + iw, y1: y, y2: y }));
      const label = svgEl("text", { x: l - 6, y: y + 4, "text-anchor": "end" });
      label.textContent = tick(v, this.log);
      axes.append(label);
    }
    // x labels
    const xStep = niceStep(d.x1 - d.x0, Math.max(2, Math.floor(iw / 90)));
    for (let x = Math.max(xStep, Math.ceil(d.x0 / xStep) * xStep); x <= d.x1; x += xStep) {
      const label = svgEl("text", { x: sx(x), y: height - b + 18, "text-anchor": "middle" });
      label.textContent = String(x);
      axes.append(label);
    }
    axes.append(svgEl("line", { class: "axis", x1: l, x2: l + iw, y1: height - b, y2: height - b }));
    axes.append(svgEl("line", { class: "axis", x1: l, x2: l, y1: t, y2: height - b }));
    svg.append(axes);

    // series: decimate to about two points per pixel column
    const n = this.its.length;
    const stride = Math.max(1, Math.floor(n / (iw * 2)));
    for (const s of SERIES) {
      if (!this.visible[s.key] || !n) continue;
      const vals = this.values[s.key];
      const pts = [];
      for (let i = 0; i < n; i += 1) {
        if (i % stride && i !== n - 1) continue;
        const v = vals[i];
        if (!Number.isFinite(v) || (this.log && v <= 0)) continue;
        pts.push(`${sx(this.its[i]).toFixed(1)},${sy(v).toFixed(1)}`);
      }
      if (pts.length === 1) pts.push(pts[0]);
      svg.append(svgEl("polyline", { class: s.cls, points: pts.join(" "), "data-series": s.name }));
    }
    // best (lowest total) point
    if (n && this.visible.loss) {
      let bi = 0;
      const tot = this.values.loss;
      for (let i = 1; i < n; i += 1) if (tot[i] < tot[bi]) bi = i;
      if (Number.isFinite(tot[bi]) && (!this.log || tot[bi] > 0)) {
        svg.append(svgEl("circle", { class: "best", cx: sx(this.its[bi]), cy: sy(tot[bi]), r: 4 }));
      }
    }
    // cursor
    const ci = this.cursor;
    if (ci != null && ci < n) {
      const x = sx(this.its[ci]);
      svg.append(svgEl("line", { class: "hover-line", x1: x, x2: x, y1: t, y2: height - b }));
    }
    svg.dataset.points = String(n);
    const lastTotal = n ? num(this.values.loss[n - 1]) : "none yet";
    svg.setAttribute(
      "aria-label",
      `Loss curve, ${this.log ? "log" : "linear"} scale: ${n} iterations, latest total loss ${lastTotal}`,
    );
    this.#readout();
  }

  #readout() {
    if (!this.readout) return;
    const n = this.its.length;
    const i = this.cursor ?? n - 1;
    if (i < 0 || i >= n) {
      this.readout.textContent = "The curve appears once the first iterations run.";
      return;
    }
    const parts = SERIES.map((s) => `${s.name} ${num(this.values[s.key][i])}`).join(" · ");
    this.readout.textContent = `iteration ${this.its[i]}: ${parts}`;
  }

  #hover(e) {
    const n = this.its.length;
    if (!n) return;
    const rect = this.svg.getBoundingClientRect();
    const x = ((e.clientX - rect.left) / rect.width) * this.width;
    const d = this.#domain();
    const it = d.x0 + ((x - this.pad.l) / (this.width - this.pad.l - this.pad.r)) * (d.x1 - d.x0);
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.its[mid] < it) lo = mid + 1; else hi = mid;
    }
    if (lo > 0 && Math.abs(this.its[lo - 1] - it) < Math.abs(this.its[lo] - it)) lo -= 1;
    this.cursor = lo;
    this.schedule();
  }

  #key(e) {
    const n = this.its.length;
    if (!n) return;
    const step = e.shiftKey ? 10 : 1;
    let i = this.cursor ?? n - 1;
    if (e.key === "ArrowLeft") i -= step;
    else if (e.key === "ArrowRight") i += step;
    else if (e.key === "Home") i = 0;
    else if (e.key === "End") i = n - 1;
    else if (e.key === "Escape") { this.cursor = null; this.schedule(); return; }
    else return;
    e.preventDefault();
    this.cursor = Math.min(n - 1, Math.max(0, i));
    this.schedule();
  }
}
