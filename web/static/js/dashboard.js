// The job dashboard: status, progress, speed/ETA, live loss curve, snapshots, result.
// Each poll (about once a second) makes two small requests, in parallel: the job JSON and
// the progress entries after the last stream id seen; every few seconds a third, the fleet's
// state, so its banners follow workers coming and going. Polling stops once the job has ended.

import {
  api, ApiError, absTime, duration, el, hideFleetBanners, isTerminal, num, poller, showFleetBanners,
} from "./common.js";
import { LossChart } from "./chart.js";

const $ = (id) => document.getElementById(id);
const config = JSON.parse($("page-config").textContent);
let job = config.job;
let cursor = null; // progress stream id of the last entry we have
let lastIteration = 0;
const recent = []; // [{iteration, elapsed}] of the newest entries, for speed and ETA
let lastStatus = null;
let tiles = null; // a tiled job's progress within its iteration ({iteration, phase, done, total})

const chart = new LossChart($("chart"), { readout: $("readout"), total: job.iterations_total });
$("log").addEventListener("change", (e) => chart.setLog(e.target.checked));
for (const box of document.querySelectorAll("input[data-series]")) {
  box.addEventListener("change", () => chart.setVisible(box.dataset.series, box.checked));
}

// ---- progress entries -------------------------------------------------------------------

function addEntries(entries) {
  if (!entries.length) return;
  if (entries[0].iteration <= lastIteration) recent.length = 0; // restarted or resumed run
  chart.add(entries);
  for (const e of entries) {
    recent.push({ iteration: e.iteration, elapsed: e.elapsed });
    lastIteration = e.iteration;
  }
  if (recent.length > 60) recent.splice(0, recent.length - 60);
}

async function fetchProgress() {
  const url = job.links.progress + (cursor ? `?after=${encodeURIComponent(cursor)}` : "");
  const data = await api(url);
  addEntries(data.entries || []);
  if (data.last_id) cursor = data.last_id;
  tiles = data.tiles || null;
  return data;
}

/** Iterations per second from the newest entries (skipping the first, which pays compile). */
function speed() {
  if (recent.length < 2) return null;
  const window = recent.slice(recent[0].iteration <= 1 && recent.length > 2 ? 1 : 0);
  const a = window[0];
  const b = window[window.length - 1];
  const dt = b.elapsed - a.elapsed;
  return dt > 0 ? (b.iteration - a.iteration) / dt : null;
}

// ---- snapshots --------------------------------------------------------------------------

const snaps = { list: [], index: -1, follow: true, timer: null };

function snapshotUrl(iteration) {
  return `${job.links.snapshots}/${iteration}`;
}

// The strip's 56 px tiles: a small WebP (160 px, sharp at 2x), not the full snapshot.
function snapshotThumbUrl(iteration) {
  return `${snapshotUrl(iteration)}?thumb=160`;
}

function syncSnapshots() {
  const list = job.snapshots || [];
  if (list.length < snaps.list.length) { // a restarted run: start over
    snaps.list = [];
    $("strip").replaceChildren();
  }
  for (const it of list.slice(snaps.list.length)) {
    const i = snaps.list.length;
    snaps.list.push(it);
    const button = el(
      "button",
      { type: "button", title: `Iteration ${it}`, "aria-label": `Show snapshot at iteration ${it}` },
      el("img", { src: snapshotThumbUrl(it), alt: "", loading: "lazy", width: 56, height: 56 }),
      String(it),
    );
    button.addEventListener("click", () => { stopPlay(); show(i); });
    $("strip").append(el("li", {}, button));
  }
  const n = snaps.list.length;
  const scrubber = $("scrubber");
  scrubber.max = String(Math.max(0, n - 1));
  scrubber.disabled = n < 2;
  $("play").disabled = n < 2;
  $("latest").disabled = n < 1;
  if (n && (snaps.follow || snaps.index < 0)) show(n - 1);
}

function show(i) {
  const n = snaps.list.length;
  if (i < 0 || i >= n) return;
  const changed = i !== snaps.index;
  snaps.index = i;
  snaps.follow = i === n - 1;
  const it = snaps.list[i];
  $("scrubber").value = String(i);
  $("scrubber").setAttribute("aria-valuetext", `iteration ${it} (${i + 1} of ${n})`);
  $("snap-caption").textContent = `Snapshot at iteration ${it} · ${i + 1} of ${n}`;
  document.querySelectorAll("#strip button").forEach((b, k) => {
    b.setAttribute("aria-current", k === i ? "true" : "false");
    if (k === i && changed) b.scrollIntoView({ block: "nearest", inline: "nearest" });
  });
  if (!changed && !$("snap-img").hidden) return;
  const img = $("snap-img");
  const next = new Image();
  next.onload = () => {
    if (snaps.index !== i) return;
    img.src = next.src;
    img.alt = `The picture at iteration ${it}`;
    img.hidden = false;
    $("snap-placeholder").hidden = true;
  };
  next.src = snapshotUrl(it);
}

function stopPlay() {
  if (snaps.timer) clearInterval(snaps.timer);
  snaps.timer = null;
  $("play").setAttribute("aria-pressed", "false");
  $("play").textContent = "▶ Replay";
}

$("scrubber").addEventListener("input", (e) => { stopPlay(); show(Number(e.target.value)); });
$("latest").addEventListener("click", () => { stopPlay(); show(snaps.list.length - 1); });
$("play").addEventListener("click", () => {
  if (snaps.timer) { stopPlay(); return; }
  $("play").setAttribute("aria-pressed", "true");
  $("play").textContent = "⏸ Pause";
  let i = snaps.index >= snaps.list.length - 1 ? 0 : snaps.index;
  show(i);
  snaps.timer = setInterval(() => {
    i += 1;
    if (i >= snaps.list.length) { stopPlay(); return; }
    show(i);
  }, 350);
});

// ---- rendering ----------------------------------------------------------------------------

const PHASE = {
  queued: "Waiting for a worker…",
  running: "Painting…",
  succeeded: "Finished",
  failed: "Failed",
  canceled: "Canceled",
};

/** A print's progress within its iteration: it is painted in tiles, minutes an iteration. */
function tileText(t) {
  if (t.phase === "targets") return `preparing: tile ${t.done} of ${t.total}`;
  return `iteration ${t.iteration}: tile ${t.done} of ${t.total}`;
}

function render() {
  const status = job.status;
  const terminal = isTerminal(job);
  const badge = $("status");
  badge.className = `badge ${status}`;
  badge.textContent = status;
  const total = job.iterations_total || 0;
  const done = Math.max(job.iterations_done || 0, status === "running" ? lastIteration : 0);
  chart.setTotal(total);
  $("it-done").textContent = String(done);
  $("it-total").textContent = String(total);
  $("bar").max = total || 1;
  $("bar").value = Math.min(done, total);
  let phase = PHASE[status] || status;
  if (job.cancel_requested && !terminal) phase = "Canceling…";
  if (status === "queued" && job.attempts > 0) phase = "Waiting for a worker (retrying)…";
  if (status === "queued" && job.resumes_at > 1) {
    phase = `Waiting for a worker, resumes at iteration ${job.resumes_at}…`;
  } else if (status === "queued" && job.resumes_at === 1) {
    phase = "Waiting for a worker, starts again at iteration 1 (no checkpoint yet)…";
  }
  if (status === "running" && tiles && !job.cancel_requested) phase = `${phase} ${tileText(tiles)}`;
  $("phase").textContent = phase;

  const rate = speed();
  if (status === "running") {
    $("speed").textContent = rate ? `${rate.toFixed(rate < 10 ? 1 : 0)} it/s` : "—";
    $("eta").textContent = rate ? duration((total - done) / rate) : "—";
  } else if (terminal) {
    const last = recent[recent.length - 1];
    const avg = last && last.elapsed > 0 ? last.iteration / last.elapsed : null;
    $("speed").textContent = avg ? `${avg.toFixed(avg < 10 ? 1 : 0)} it/s avg` : "—";
    $("eta").textContent = status === "succeeded" ? "done" : "—";
  } else {
    $("speed").textContent = "—";
    $("eta").textContent = "—";
  }
  $("elapsed").textContent = duration(job.duration_seconds);
  $("best").textContent = job.best_loss != null
    ? `${num(job.best_loss)} @ ${job.best_iteration}` : "—";

  $("cancel").hidden = terminal;
  $("cancel").disabled = Boolean(job.cancel_requested);
  renderExpiry(terminal);
  $("download").hidden = !job.result_available;

  const errorBox = $("error-box");
  errorBox.hidden = status !== "failed";
  if (status === "failed") $("error-text").textContent = job.error || "The worker gave no reason.";

  if (terminal && job.result_available) {
    const panel = $("result-panel");
    if (panel.hidden) {
      $("result-img").src = job.links.result;
      panel.hidden = false;
    }
    const where = job.best_iteration != null ? `iteration ${job.best_iteration}` : "the best iteration";
    $("result-caption").textContent = status === "succeeded"
      ? `The best image, from ${where}, total loss ${num(job.best_loss)}.`
      : `Canceled early; the best image so far, from ${where}, total loss ${num(job.best_loss)}.`;
    const size = job.width ? `${job.width} × ${job.height} px · ` : "";
    $("result-meta").textContent = `${size}${job.weights || "weights unknown"} weights · ${duration(job.duration_seconds)}`;
  }
  if (job.width) $("size-dd").textContent = `${job.width} × ${job.height} px`;
  if (job.weights) $("weights-dd").textContent = job.weights;
  syncSnapshots();

  if (status !== lastStatus) {
    if (lastStatus !== null) $("announce").textContent = `Job ${phase.toLowerCase()}`;
    document.title = `${status === "running" ? "▶ " : ""}Job ${job.id.slice(0, 8)} · ${status} · stylequeue`;
    lastStatus = status;
  }
}

// ---- polling ------------------------------------------------------------------------------

async function poll() {
  let fresh;
  let progress;
  try {
    [fresh, progress] = await Promise.all([api(job.links.self), fetchProgress()]);
  } catch (err) {
    // keep what is drawn; say so, and let the poller retry with a growing pause
    $("phase").textContent = err instanceof ApiError && err.status === 404
      ? "This job is gone." : "Connection lost — retrying…";
    if (err instanceof ApiError && err.status === 404) return false;
    throw err;
  }
  job = fresh;
  followFleet();
  // catch up when far behind (a full page came back), and once more when the job has ended,
  // for entries written between the two reads
  if (progress.more || isTerminal(job)) await drain();
  render();
  return !isTerminal(job); // false: the job has ended, stop polling
}

/** Read the rest of the history (stream, or storage once Redis forgot); pages of 1000. */
async function drain() {
  for (let i = 0; i < 100; i += 1) {
    const data = await fetchProgress();
    if (!data.more) break;
  }
}

async function cancel() {
  const button = $("cancel");
  button.setAttribute("aria-busy", "true");
  button.disabled = true;
  $("action-error").textContent = "";
  try {
    const data = await api(job.links.cancel, { method: "POST" });
    if (data && data.id) { job = data; render(); }
    else { job.cancel_requested = true; render(); }
    $("announce").textContent = "Cancel requested";
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 409)) {
      $("action-error").textContent = `Could not cancel: ${err.message}`;
      button.disabled = false;
    }
  } finally {
    button.removeAttribute("aria-busy");
  }
  if (timer.stopped) { job = await api(job.links.self); render(); }
}
$("cancel").addEventListener("click", cancel);

// ---- deleting, and when retention does it ---------------------------------------------------

/** "Deleted automatically on <date>" once the job has ended (the job JSON's expires_at). */
function renderExpiry(terminal) {
  const time = $("expires-at");
  const days = config.retention_days;
  let text = "Kept until you delete it.";
  if (job.expires_at) text = "Deleted automatically on";
  else if (!terminal && days > 0) text = `Deleted automatically ${days} days after it ends.`;
  $("expiry-text").textContent = text;
  time.hidden = !job.expires_at;
  if (job.expires_at && time.getAttribute("datetime") !== job.expires_at) {
    time.setAttribute("datetime", job.expires_at);
  }
  if (job.expires_at) time.textContent = absTime(job.expires_at);
}

const deleteDialog = $("delete-dialog");
$("delete").addEventListener("click", () => {
  deleteDialog.returnValue = "";
  deleteDialog.showModal();
});
deleteDialog.addEventListener("close", () => {
  if (deleteDialog.returnValue === "delete") deleteJob();
});

async function deleteJob() {
  const button = $("delete");
  button.setAttribute("aria-busy", "true");
  button.disabled = true;
  $("action-error").textContent = "";
  try {
    await api(job.links.self, { method: "DELETE" });
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) { // 404: gone already
      $("action-error").textContent = `Could not delete: ${err.message}`;
      button.disabled = false;
      button.removeAttribute("aria-busy");
      return;
    }
  }
  timer.stop();
  window.location.assign(`${config.urls.jobs}?deleted=${encodeURIComponent(job.id.slice(0, 8))}`);
}

// ---- the fleet's banners ------------------------------------------------------------------

// The fleet is a Redis scan on the server: once every few polls is plenty for a banner.
const FLEET_EVERY_MS = 3000;
let fleetCheckedAt = -Infinity;

/** Keep the banners in step with the fleet while the job waits or runs (a worker that comes
 * up hides "No worker online"). A finished job's picture is what it is: the banners about
 * waiting jobs go, and the fleet is not asked again. Never awaited: a hint, not the poll. */
function followFleet() {
  if (isTerminal(job)) {
    hideFleetBanners("workers-banner", "weights-banner");
    return;
  }
  const now = performance.now();
  if (now - fleetCheckedAt < FLEET_EVERY_MS) return;
  fleetCheckedAt = now;
  showFleetBanners(config.urls.fleet, {
    skipRandom: job.weights === "random",
    wanted: () => !isTerminal(job), // the job may have ended while we asked
  });
}

const createdAt = $("created-at");
createdAt.textContent = absTime(createdAt.getAttribute("datetime"));

const timer = poller(poll, { interval: 1000, hiddenInterval: 5000 });
render();
followFleet();
if (isTerminal(job)) {
  drain().then(render, (err) => console.warn(err));
} else {
  timer.start();
}
