// The jobs list: newest first, paginated; refreshes itself every few seconds while any job
// on the page is queued or running (one request per refresh), updating rows in place.

import { absTime, ago, api, duration, el, isTerminal, poller } from "./common.js";

const $ = (id) => document.getElementById(id);
const config = JSON.parse($("page-config").textContent);
const root = $("jobs-root");
const rows = new Map(); // job id -> {li, status}
let list = null;

function pageUrl(page) {
  const url = new URL(window.location.href);
  url.searchParams.set("page", String(page));
  return url.pathname + url.search;
}

function sizeText(job) {
  if (job.width && job.height) return `${job.width} × ${job.height} px`;
  return job.params && job.params.max_size ? `≤ ${job.params.max_size} px` : "";
}

function rowFor(job) {
  const thumb = el("img", { class: "thumb", alt: "", loading: "lazy", width: 72, height: 72 });
  const title = el("a", { class: "title", href: job.links.dashboard });
  const meta = el("div", { class: "meta" });
  const right = el("div", { class: "right" });
  const li = el("li", { class: "job-row", "data-job-id": job.id }, thumb, el("div", {}, title, meta), right);
  return { li, thumb, title, meta, right, status: null, thumbUrl: null };
}

function update(row, job) {
  if (row.thumbUrl !== job.links.thumbnail) {
    row.thumbUrl = job.links.thumbnail;
    row.thumb.src = job.links.thumbnail;
  }
  row.title.textContent = `Job ${job.id.slice(0, 8)}`;
  row.title.setAttribute("aria-label", `Job ${job.id.slice(0, 8)}, ${job.status}`);
  const created = el("time", { datetime: job.created_at, title: absTime(job.created_at) }, ago(job.created_at));
  row.meta.replaceChildren(
    el("span", { text: `${job.preset || "custom"} · ${sizeText(job)}` }),
    el("span", { text: `${job.iterations_done} / ${job.iterations_total} it` }),
    created,
  );
  const badge = el("span", { class: `badge ${job.status}`, text: job.status });
  const parts = [badge];
  if (job.status === "running") {
    const pct = job.iterations_total ? (100 * job.iterations_done) / job.iterations_total : 0;
    const bar = el("span", { class: "mini-bar", role: "presentation" }, el("i"));
    bar.firstChild.style.width = `${pct.toFixed(1)}%`;
    parts.push(bar);
  }
  if (job.duration_seconds != null) parts.push(el("span", { class: "muted", text: duration(job.duration_seconds) }));
  row.right.replaceChildren(...parts);
  if (row.status && row.status !== job.status) {
    $("list-status").textContent = `Job ${job.id.slice(0, 8)} ${job.status}`;
  }
  row.status = job.status;
}

function renderEmpty(data) {
  rows.clear();
  list = null;
  const onLaterPage = data.total > 0;
  root.replaceChildren(el("section", { class: "panel empty" },
    el("h2", { text: onLaterPage ? "Nothing on this page" : "No pictures yet" }),
    el("p", { class: "muted", text: onLaterPage
      ? "Your jobs are on earlier pages."
      : "Jobs you submit from this browser appear here, newest first." }),
    onLaterPage
      ? el("a", { class: "btn", href: pageUrl(1) }, "Go to the first page")
      : el("a", { class: "btn primary", href: "/" }, "Paint your first picture"),
  ));
}

function render(data) {
  root.setAttribute("aria-busy", "false");
  if (!data.jobs.length) {
    renderEmpty(data);
  } else {
    if (!list) {
      list = el("ol", { class: "jobs", "aria-label": "Your jobs, newest first" });
      root.replaceChildren(list);
    }
    const seen = new Set();
    data.jobs.forEach((job, index) => {
      let row = rows.get(job.id);
      if (!row) { row = rowFor(job); rows.set(job.id, row); }
      update(row, job);
      seen.add(job.id);
      if (list.children[index] !== row.li) list.insertBefore(row.li, list.children[index] || null);
    });
    for (const [id, row] of rows) if (!seen.has(id)) { row.li.remove(); rows.delete(id); }
  }
  const pages = Math.max(1, Math.ceil(data.total / data.per_page));
  $("pager").hidden = pages <= 1 && data.page <= 1;
  $("page-label").textContent = `Page ${data.page} of ${pages} · ${data.total} jobs`;
  for (const [id, target, enabled] of [
    ["prev", data.page - 1, data.page > 1],
    ["next", data.page + 1, Boolean(data.next)],
  ]) {
    const link = $(id);
    if (enabled) { link.href = pageUrl(target); link.removeAttribute("aria-disabled"); }
    else { link.removeAttribute("href"); link.setAttribute("aria-disabled", "true"); }
  }
}

async function refresh() {
  const url = `${config.urls.jobs}?page=${config.page}&per_page=${config.per_page}`;
  try {
    const data = await api(url);
    render(data);
    return data.jobs.some((job) => !isTerminal(job)); // keep refreshing while active
  } catch (err) {
    root.setAttribute("aria-busy", "false");
    if (!list) {
      root.replaceChildren(el("p", { class: "banner bad", role: "alert" }, `Could not load your jobs: ${err.message}`));
    }
    throw err;
  }
}

// A job's dashboard comes back here after deleting it, with ?deleted=<its short id>: say so
// once, and take the word off the URL (the pager's links copy the query).
const deleted = new URLSearchParams(window.location.search).get("deleted");
if (deleted !== null) {
  if (/^[0-9a-f]{8}$/.test(deleted)) {
    $("deleted-note").textContent = `Job ${deleted} deleted.`;
    $("deleted-note").hidden = false;
  }
  const url = new URL(window.location.href);
  url.searchParams.delete("deleted");
  window.history.replaceState(null, "", url.pathname + url.search);
}

poller(refresh, { interval: 3000, hiddenInterval: 15000 }).start();
