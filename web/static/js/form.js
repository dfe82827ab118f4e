// The submission form: drag-and-drop with previews, sample styles, presets, client-side
// checks that mirror the server's limits, server errors beside their field, CSRF header.

import { api, ApiError, poller, showFleetBanners } from "./common.js";

const $ = (id) => document.getElementById(id);
const form = $("job-form");
const config = JSON.parse($("page-config").textContent);
const { limits } = config;
const FORMATS = new Set(config.formats);
const EXT_TYPES = { png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", webp: "image/webp" };
const NUMERIC = [...form.querySelectorAll('input[type="number"]')];
const PARAM_NAMES = [...NUMERIC.map((i) => i.name), "preserve_colors", "weights"];
const ALWAYS_SENT = new Set(["iterations", "max_size", "snapshot_every"]);
const sampleCache = new Map(); // slug -> Promise<File>

// The test suite switches client checks off (data-client-checks="off") to prove that the
// server's own errors reach the page; people always get them.
const clientChecks = () => form.dataset.clientChecks !== "off";

// ---- errors beside fields ---------------------------------------------------------------

function fieldTarget(name) {
  if (name === "content" || name === "style") return $(`${name}-drop`);
  return form.elements[name] instanceof Element ? form.elements[name] : null;
}

function setError(name, message) {
  let box = $(`${name}-error`);
  if (!box) box = $("form-error");
  box.textContent = message || "";
  const target = fieldTarget(name);
  if (target) {
    if (message) target.setAttribute("aria-invalid", "true");
    else target.removeAttribute("aria-invalid");
  }
  if (name === "style") {
    for (const r of form.querySelectorAll('input[name="sample_style"]')) {
      if (message) r.setAttribute("aria-invalid", "true"); else r.removeAttribute("aria-invalid");
    }
  }
  if (message && target && target.closest("details") && !target.closest("details").open) {
    target.closest("details").open = true;
  }
  return box;
}

function clearErrors() {
  for (const box of form.querySelectorAll(".field-error")) box.textContent = "";
  for (const node of form.querySelectorAll('[aria-invalid="true"]')) node.removeAttribute("aria-invalid");
}

function focusField(name) {
  const target = name === "content" || name === "style" ? $(name) : fieldTarget(name);
  (target || $("form-error")).focus({ preventScroll: false });
}

// ---- files: picker, drop, preview, checks ------------------------------------------------

function mb(bytes) {
  return `${(bytes / 1024 / 1024).toFixed(bytes < 1024 * 1024 ? 2 : 1)} MB`;
}

function fileType(file) {
  if (file.type) return file.type;
  const ext = (file.name.split(".").pop() || "").toLowerCase();
  return EXT_TYPES[ext] || "";
}

/** Checks we can make without the server: type, size, and that the browser can decode it. */
async function checkFile(file) {
  if (!file.size) return "The file is empty.";
  if (!FORMATS.has(fileType(file))) return "Choose a PNG, JPEG or WebP image.";
  if (file.size > limits.max_upload_bytes) {
    return `The file is ${mb(file.size)}; the limit is ${mb(limits.max_upload_bytes)}.`;
  }
  try {
    const bitmap = await createImageBitmap(file);
    const pixels = bitmap.width * bitmap.height;
    bitmap.close();
    if (pixels > limits.max_image_pixels) {
      return `The image has ${(pixels / 1e6).toFixed(1)} megapixels; the limit is ${(limits.max_image_pixels / 1e6).toFixed(1)}.`;
    }
  } catch {
    return "This file is not an image we can read (is it damaged, or renamed?).";
  }
  return null;
}

const chosen = { content: null, style: null, styleSource: null };
const previewUrls = {};

function showPreview(name, file, label) {
  const drop = $(`${name}-drop`);
  const img = $(`${name}-preview`);
  if (previewUrls[name]) URL.revokeObjectURL(previewUrls[name]);
  if (!file) {
    drop.classList.remove("has-file");
    img.removeAttribute("src");
    return;
  }
  previewUrls[name] = URL.createObjectURL(file);
  img.src = previewUrls[name];
  img.alt = `Preview: ${label || file.name}`;
  drop.classList.add("has-file");
}

async function takeFile(name, file, { source = "upload", label = null } = {}) {
  setError(name, "");
  chosen[name] = file;
  if (name === "style") chosen.styleSource = file ? source : null;
  const meta = $(`${name}-hint`);
  // a sample painting is shown by its own tile; the drop zone previews uploads only
  if (!file || source === "sample") {
    showPreview(name, null);
    meta.textContent = meta.dataset.hint;
    if (!file) return;
  } else {
    meta.textContent = `${label || file.name} · ${mb(file.size)}`;
    showPreview(name, file, label);
  }
  if (clientChecks()) {
    const problem = await checkFile(file);
    if (problem && chosen[name] === file) {
      setError(name, problem);
      showPreview(name, null);
    }
  }
}

for (const name of ["content", "style"]) {
  const input = $(name);
  const drop = $(`${name}-drop`);
  $(`${name}-hint`).dataset.hint = $(`${name}-hint`).textContent;
  input.addEventListener("change", () => {
    const file = input.files && input.files[0];
    if (name === "style" && file) {
      for (const r of form.querySelectorAll('input[name="sample_style"]')) r.checked = false;
    }
    takeFile(name, file || null);
  });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("dragging"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("dragging");
    const files = e.dataTransfer && e.dataTransfer.files;
    if (!files || !files.length) return;
    try { input.files = files; } catch { /* older browsers: keep our own reference */ }
    if (name === "style") {
      for (const r of form.querySelectorAll('input[name="sample_style"]')) r.checked = false;
    }
    takeFile(name, files[0]);
  });
}
// A file dropped beside the zones must not navigate away from the form.
window.addEventListener("dragover", (e) => e.preventDefault());
window.addEventListener("drop", (e) => e.preventDefault());

// ---- sample styles: fetched from our own static files, sent as the style upload ----------

function sampleFile(radio) {
  const slug = radio.value;
  if (!sampleCache.has(slug)) {
    const p = fetch(radio.dataset.url)
      .then((res) => {
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        return res.blob();
      })
      .then((blob) => new File([blob], `${slug}.jpg`, { type: blob.type || "image/jpeg" }));
    p.catch(() => sampleCache.delete(slug));
    sampleCache.set(slug, p);
  }
  return sampleCache.get(slug);
}

for (const radio of form.querySelectorAll('input[name="sample_style"]')) {
  radio.addEventListener("change", async () => {
    if (!radio.checked) return;
    $("style").value = "";
    try {
      const file = await sampleFile(radio);
      if (radio.checked) await takeFile("style", file, { source: "sample", label: radio.dataset.title });
    } catch (err) {
      setError("style", `Could not load the sample painting (${err.message}).`);
    }
  });
}

// ---- presets and numbers ------------------------------------------------------------------

function applyPreset(name) {
  const preset = config.presets[name];
  if (!preset) return;
  for (const [key, value] of Object.entries(preset)) {
    const field = form.elements[key];
    if (!field) continue;
    if (field.type === "checkbox") field.checked = Boolean(value);
    else field.value = String(value);
    setError(key, "");
  }
}
for (const radio of form.querySelectorAll('input[name="preset"]')) {
  radio.addEventListener("change", () => radio.checked && applyPreset(radio.value));
}

function checkNumber(input) {
  const raw = input.value.trim();
  const label = form.querySelector(`label[for="${input.id}"]`).textContent.trim();
  if (raw === "") return `${label}: enter a number.`;
  const value = Number(raw);
  const min = Number(input.min);
  const max = input.max === "" ? Infinity : Number(input.max);
  if (!Number.isFinite(value)) return `${label} must be a number.`;
  if (input.dataset.kind === "int" && !Number.isInteger(value)) return `${label} must be a whole number.`;
  if (value < min || value > max) return `${label} must be from ${input.min} to ${input.max}.`;
  return null;
}
for (const input of NUMERIC) {
  input.addEventListener("change", () => {
    if (clientChecks()) setError(input.name, checkNumber(input));
  });
}

// ---- submit ---------------------------------------------------------------------------------

function presetValue(name) {
  const preset = config.presets[form.elements.preset.value] || {};
  return preset[name];
}

function buildBody() {
  const body = new FormData();
  body.append("content", chosen.content);
  body.append("style", chosen.style);
  body.append("preset", form.elements.preset.value);
  for (const name of PARAM_NAMES) {
    const field = form.elements[name];
    if (!field) continue;
    let value;
    if (field.type === "checkbox") value = field.checked ? "true" : "false";
    else value = field.value.trim();
    const preset = presetValue(name);
    // size and length always; the rest only when it differs from the preset, so the job
    // records what the person changed (the form's presets may be capped by server limits)
    if (value === "") continue;
    if (!ALWAYS_SENT.has(name) && preset !== undefined && String(preset) === value) continue;
    if (field.type === "checkbox" && !field.checked && !preset) continue;
    body.append(name, value);
  }
  return body;
}

async function validate() {
  const problems = [];
  if (!chosen.content) problems.push(["content", "Choose a photo to paint."]);
  if (!chosen.style) problems.push(["style", "Pick a painting, or upload a style image."]);
  if (clientChecks()) {
    for (const name of ["content", "style"]) {
      if (chosen[name]) {
        const problem = await checkFile(chosen[name]);
        if (problem) problems.push([name, problem]);
      }
    }
    const total = (chosen.content?.size || 0) + (chosen.style?.size || 0);
    if (!problems.length && total > limits.max_upload_bytes) {
      problems.push(["form", `The two images add up to ${mb(total)}; the limit is ${mb(limits.max_upload_bytes)} in all.`]);
    }
    for (const input of NUMERIC) {
      const problem = checkNumber(input);
      if (problem) problems.push([input.name, problem]);
    }
  }
  return problems;
}

function busy(on) {
  const button = $("submit");
  button.disabled = on;
  button.setAttribute("aria-busy", on ? "true" : "false");
  $("submit-note").textContent = on ? "Uploading…" : "You will see the picture form on the next page.";
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors();
  busy(true);
  try {
    const problems = await validate();
    if (problems.length) {
      for (const [name, message] of problems) setError(name, message);
      focusField(problems[0][0]);
      busy(false);
      return;
    }
    const job = await api(config.urls.jobs, { method: "POST", body: buildBody() });
    $("submit-note").textContent = "Submitted — opening the dashboard…";
    window.location.assign(job.links.dashboard || `/jobs/${job.id}`);
  } catch (err) {
    busy(false);
    let message = err.message;
    if (err instanceof ApiError && err.status === 429) {
      message = `${err.message} Wait for one of your jobs to finish, then try again.`;
    } else if (!(err instanceof ApiError)) {
      message = `Could not reach the server (${err.message}). Check your connection and try again.`;
    }
    const name = err instanceof ApiError && err.field ? err.field : "form";
    const box = setError(name, message);
    if (box.id === "form-error" && name !== "form") box.textContent = `${name}: ${message}`;
    focusField(name);
  }
});

// ---- the fleet banners ----------------------------------------------------------------------

// Followed while the page is open (a worker still warming up when the page loaded comes
// online a few seconds later); every 5 s, every 30 s in a background tab.
poller(async () => { await showFleetBanners(config.urls.fleet); }, {
  interval: 5000, hiddenInterval: 30000,
}).start();

// A sample is chosen by default, so a newcomer needs only a photo.
const firstSample = form.querySelector('input[name="sample_style"]');
if (firstSample && !chosen.style && !$("style").files.length) {
  firstSample.checked = true;
  firstSample.dispatchEvent(new Event("change"));
}
