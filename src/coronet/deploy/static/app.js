// The page: send one X-ray to /v1/predict, show the film, the class probabilities and the Grad-CAM overlay.
// Plain JavaScript, no build step; everything comes from this server (see the page's Content-Security-Policy).
"use strict";

const $ = (id) => document.getElementById(id);
let maxUploadBytes = null;
// Each file chosen gets the next number; a reply for any but the latest is dropped (and its request aborted),
// so a slow answer for an earlier file can never overwrite the result of the file chosen after it.
let latest = 0;
let inFlight = null;

function show(element, visible) { element.hidden = !visible; }

function setError(message) {
  $("error").textContent = message || "";
  show($("error"), Boolean(message));
}

function percent(p) { return (100 * p).toFixed(1) + " %"; }

async function loadModelInfo() {
  try {
    const response = await fetch("/v1/health");
    const health = await response.json();
    const adult = health.adult_false_covid_rate === null || health.adult_false_covid_rate === undefined
      ? "Its rate of false COVID-19 answers on adult films was never measured: be wary of a COVID-19 answer."
      : `It called ${percent(health.adult_false_covid_rate)} of ${health.adult_test_films} adult films without ` +
        "COVID-19 \u201cCOVID-19\u201d: weigh a COVID-19 answer by that.";
    const worst = health.worst_false_covid_rate === null || health.worst_false_covid_rate === undefined
      ? "Worst false COVID-19 rate over negative sources: never measured."
      : `Worst false COVID-19 rate over negative sources: ${percent(health.worst_false_covid_rate)} ` +
        `(${health.worst_false_covid_source}).`;
    $("model").textContent = `Model ${health.model} (version ${health.version}, ${health.runtime}); ` +
      `classes: ${health.classes.join(", ")}; trained on ${health.training_data}. ${adult} ${worst}`;
    $("source-warning").textContent = health.source_warning ? `Warning: ${health.source_warning}.` : "";
    show($("source-warning"), Boolean(health.source_warning));
    maxUploadBytes = health.max_upload_bytes;
    $("limit").textContent = `Up to ${(maxUploadBytes / 1048576).toFixed(0)} MB.`;
  } catch (err) {
    $("model").textContent = "The model service is not answering.";
  }
}

function renderBars(probabilities, predicted) {
  const bars = $("bars");
  bars.replaceChildren();
  const entries = Object.entries(probabilities).sort((a, b) => b[1] - a[1]);
  for (const [name, p] of entries) {
    const row = document.createElement("div");
    row.className = "bar-row" + (name === predicted ? " top" : "");
    row.dataset.class = name;
    const label = document.createElement("span");
    label.className = "bar-label";
    label.textContent = name;
    const track = document.createElement("span");
    track.className = "bar-track";
    track.setAttribute("role", "meter");
    track.setAttribute("aria-label", name);
    track.setAttribute("aria-valuemin", "0");
    track.setAttribute("aria-valuemax", "1");
    track.setAttribute("aria-valuenow", String(p));
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = (100 * p).toFixed(2) + "%";
    bar.style.display = "block";
    track.append(bar);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = percent(p);
    row.append(label, track, value);
    bars.append(row);
  }
}

async function analyse(file) {
  const request = ++latest;
  if (inFlight) inFlight.abort();
  inFlight = null;
  setError("");
  $("status").textContent = "";
  show($("result"), false);
  if (!file) return;
  if (maxUploadBytes !== null && file.size > maxUploadBytes) {
    setError(`${file.name}: too large (${file.size} bytes; the limit is ${maxUploadBytes} bytes).`);
    return;
  }
  $("status").textContent = `Analysing ${file.name}…`;
  const form = new FormData();
  form.append("file", file, file.name);
  const controller = new AbortController();
  inFlight = controller;
  let body;
  try {
    const response = await fetch("/v1/predict?cam=true&image=true",
                                 { method: "POST", body: form, signal: controller.signal });
    body = await response.json().catch(() => null);  // a busy server's 503 is plain text
    if (request !== latest) return;
    if (!response.ok || body === null) {
      throw new Error((body && body.error) || `HTTP ${response.status} ${response.statusText}`.trim());
    }
  } catch (err) {
    if (request !== latest) return;  // aborted or overtaken by a newer file: its outcome no longer matters
    $("status").textContent = "";
    setError(`Could not analyse ${file.name}: ${err.message}`);
    return;
  } finally {
    if (inFlight === controller) inFlight = null;
  }
  $("filename").textContent = body.file;
  $("summary").textContent = `Most probable class: ${body.predicted_class} ` +
    `(${percent(body.probabilities[body.predicted_class])}). Research output, not a diagnosis.`;
  renderBars(body.probabilities, body.predicted_class);
  $("image").src = "data:image/png;base64," + body.image;
  $("cam").src = "data:image/png;base64," + body.cam;
  $("cam-class").textContent = body.cam_class;
  $("status").textContent = `Done: ${body.file} (${body.image_size.width} × ${body.image_size.height} pixels).`;
  show($("result"), true);
}

function setUp() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => analyse(event.target.files[0]));
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("file").click(); }
  });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (event) => analyse(event.dataTransfer.files[0]));
  // A file dropped outside the drop zone would make the browser navigate away from the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  loadModelInfo();
}

setUp();
