/**
 * The page's controls: load an adapter export (picked files or ?export=DIR/), collect
 * labelled support images (drawn or picked), adapt, classify. Images become rows of the
 * export's input shape (C, H, W) as value = scale x intensity. `window.mtlDeploy` drives the
 * same state with arrays instead of images (load, adapt, predict), for scripts and tests.
 */

import * as ort from "./node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";

import { ExportError, FewShotAdapter, InputError, asArray, openExport, taskColumns } from "./client.mjs";

ort.env.wasm.numThreads = 1; // threads need a cross-origin isolated page; a small graph gains nothing from them

const $ = (selector, root = document) => root.querySelector(selector);
const params = new URLSearchParams(location.search);
const state = { adapter: null, adapted: null, examples: [] }; // examples: {data: Float32Array, label}, in the order added

for (const [name, control] of [["scale", "#scale"], ["strokes", "#strokes"], ["invert", "#invert"]]) {
  if (!params.has(name)) continue;
  if (name === "invert") $(control).checked = params.get(name) === "1";
  else $(control).value = params.get(name);
}

function say(selector, text, failed = false) {
  $(selector).textContent = text;
  $(selector).classList.toggle("error", failed);
}

/** Runs a control's action; the library's own errors are shown in one line, others thrown. */
function guarded(selector, action) {
  return async (...args) => {
    try {
      return await action(...args);
    } catch (err) {
      say(selector, err.message, true);
      if (!(err instanceof InputError || err instanceof ExportError)) throw err;
    }
  };
}

function loaded() {
  if (!state.adapter) throw new InputError("load an adapter export first (step 1)");
  return state.adapter;
}
const rowShape = () => loaded().rowShape; // [C, H, W]
const scale = () => Number($("#scale").value) || 1;
const lightStrokes = () => $("#strokes").value === "light";

/** An image (canvas, bitmap) as one row: resized to H x W, gray (C = 1) or RGB (C = 3). */
function pixels(source, invert) {
  const [channels, height, width] = rowShape();
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d");
  context.imageSmoothingQuality = "high";
  context.drawImage(source, 0, 0, width, height);
  const rgba = context.getImageData(0, 0, width, height).data;
  const row = new Float32Array(channels * height * width);
  for (let p = 0; p < height * width; p++) {
    const [r, g, b] = rgba.subarray(4 * p, 4 * p + 3);
    const values = channels === 1 ? [(299 * r + 587 * g + 114 * b) / 1000] : [r, g, b]; // gray as PIL's "L"
    values.forEach((v, c) => { row[c * height * width + p] = scale() * (invert ? 1 - v / 255 : v / 255); });
  }
  return row;
}

/** A row drawn back as a small image, intensity = value / scale. */
function thumbnail(row) {
  const [channels, height, width] = rowShape();
  const canvas = Object.assign(document.createElement("canvas"), { width, height, className: "thumb" });
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  for (let p = 0; p < height * width; p++) {
    const at = (c) => 255 * Math.min(1, Math.max(0, row[c * height * width + p] / scale()));
    image.data.set([at(0), at(Math.min(1, channels - 1)), at(channels - 1), 255], 4 * p);
  }
  context.putImageData(image, 0, 0);
  return canvas;
}

/** A drawing pad: strokes the way the training images show them. */
function pad(canvas) {
  const context = canvas.getContext("2d");
  const clear = () => {
    context.fillStyle = lightStrokes() ? "black" : "white";
    context.fillRect(0, 0, canvas.width, canvas.height);
  };
  let drawing = false;
  const point = (event) => [event.offsetX * canvas.width / canvas.clientWidth, event.offsetY * canvas.height / canvas.clientHeight];
  canvas.addEventListener("pointerdown", (event) => {
    drawing = true;
    canvas.setPointerCapture(event.pointerId);
    Object.assign(context, { strokeStyle: lightStrokes() ? "white" : "black", lineWidth: canvas.width / 9, lineCap: "round", lineJoin: "round" });
    context.beginPath();
    context.moveTo(...point(event));
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    context.lineTo(...point(event));
    context.stroke();
  });
  canvas.addEventListener("pointerup", () => { drawing = false; });
  canvas.clear = clear;
  clear();
}

async function imageFiles(files) {
  return Promise.all([...files].map(async (file) => pixels(await createImageBitmap(file), $("#invert").checked)));
}

/** One card per class; the number of classes is the graph's, or the user's choice (metric learners). */
function showClasses() {
  const fixed = state.adapter?.ways;
  $("#ways-control").hidden = Boolean(fixed);
  const ways = fixed ?? Math.max(2, Number($("#ways").value) || 2);
  const cards = $("#classes");
  while (cards.children.length > ways) cards.lastElementChild.remove();
  while (cards.children.length < ways) {
    const label = cards.children.length;
    const card = $("#class-card").content.firstElementChild.cloneNode(true);
    $(".index", card).textContent = label;
    pad($(".pad", card));
    $(".clear", card).onclick = () => $(".pad", card).clear();
    $(".add", card).onclick = () => addExamples([pixels($(".pad", card), false)], label);
    $("input[type=file]", card).onchange = guarded("#adapt-status", async (event) => addExamples(await imageFiles(event.target.files), label));
    cards.append(card);
  }
  state.examples = state.examples.filter((e) => e.label < ways);
  showExamples();
}

function showExamples() {
  [...$("#classes").children].forEach((card, label) => {
    const mine = state.examples.filter((e) => e.label === label);
    $(".thumbs", card).replaceChildren(...mine.map((e) => thumbnail(e.data)));
    $(".count", card).textContent = `${mine.length} image${mine.length === 1 ? "" : "s"}`;
  });
}

function addExamples(rows, label) {
  state.examples.push(...rows.map((data) => ({ data, label })));
  state.adapted = null;
  showExamples();
}

/** Adapts on the support set as collected, in the order it was added. */
function adaptNow() {
  const [channels, height, width] = rowShape(), rows = state.examples.length;
  const x = { data: new Float32Array(rows * channels * height * width), shape: [rows, channels, height, width] };
  state.examples.forEach((e, i) => x.data.set(e.data, i * e.data.length));
  state.adapted = state.adapter.adapt(x, state.examples.map((e) => e.label));
  const ways = state.adapted.ways;
  say("#adapt-status", `Adapted on ${rows} images of ${ways} classes (${state.adapter.manifest.algorithm}); classify below.`);
}

async function classify(rows) {
  if (!state.adapted) throw new InputError("adapt on a support set first (step 2)");
  const [channels, height, width] = rowShape();
  const query = { data: new Float32Array(rows.length * channels * height * width), shape: [rows.length, channels, height, width] };
  rows.forEach((row, i) => query.data.set(row, i * row.length));
  const output = await state.adapted.predict(query);
  const name = state.adapter.task.name;
  const columns = taskColumns(name, output, state.adapter.task.kind);
  $("#results").replaceChildren(...rows.map((row, i) => {
    const item = document.createElement("li");
    const text = `class ${columns[name][i]}, probability ${(100 * columns[`${name}_probability`][i]).toFixed(1)}%`;
    item.append(thumbnail(row), Object.assign(document.createElement("span"), { textContent: text }));
    return item;
  }));
  return { output, columns };
}

/** Loads an adapter export: `read(name)` gives a file of it as bytes. */
async function load(manifest, where, read) {
  const adapter = await openExport(ort, manifest, where, read);
  const shape = adapter.rowShape;
  if (!(adapter instanceof FewShotAdapter) || adapter.task.kind === "regression") {
    throw new InputError(`${where}: this page classifies with adapter exports (--format adapter) of a class task`);
  }
  if (shape.length !== 3 || ![1, 3].includes(shape[0])) throw new InputError(`${where}: this page reads images (1 or 3 channels, H, W); this export takes rows of [${shape}]`);
  Object.assign(state, { adapter, adapted: null, examples: [] });
  $("#classes").replaceChildren();
  showClasses();
  $("#results").replaceChildren();
  say("#model-status", `Loaded ${where}: ${manifest.algorithm}, images of [${shape.join(", ")}], ` +
      (adapter.ways ? `${adapter.ways} classes.` : "any number of classes."));
  say("#adapt-status", "");
  return { algorithm: manifest.algorithm, rowShape: shape, ways: adapter.ways };
}

async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new InputError(`could not fetch ${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

async function loadUrl(directory) {
  const base = new URL(directory.endsWith("/") ? directory : `${directory}/`, location.href);
  const text = new TextDecoder().decode(await fetchBytes(new URL("manifest.json", base)));
  return load(JSON.parse(text), new URL("manifest.json", base).pathname, (name) => fetchBytes(new URL(name, base)));
}

async function loadFiles(files) {
  const byName = Object.fromEntries([...files].map((f) => [f.name, f]));
  if (!byName["manifest.json"]) throw new InputError("pick the export's manifest.json together with its .onnx file");
  const read = async (name) => {
    if (!byName[name]) throw new InputError(`pick ${name} too: manifest.json names it as the model`);
    return new Uint8Array(await byName[name].arrayBuffer());
  };
  return load(JSON.parse(await byName["manifest.json"].text()), "manifest.json", read);
}

$("#export-files").onchange = guarded("#model-status", (event) => loadFiles(event.target.files));
$("#ways").onchange = () => state.adapter && showClasses();
$("#adapt").onclick = guarded("#adapt-status", adaptNow);
$("#strokes").onchange = () => document.querySelectorAll(".pad").forEach((canvas) => canvas.clear());
pad($("#query-card .pad"));
$("#query-card .clear").onclick = () => $("#query-card .pad").clear();
$("#classify").onclick = guarded("#adapt-status", () => classify([pixels($("#query-card .pad"), false)]));
$("#query-files").onchange = guarded("#adapt-status", async (event) => classify(await imageFiles(event.target.files)));

window.mtlDeploy = {
  /** Loads the adapter export in a directory served beside this page. */
  load: loadUrl,
  /** Replaces the support set with these rows (N, C, H, W) and their class ids, and adapts. */
  async adapt(supportX, supportY) {
    const { supportX: x } = loaded().adapt(supportX, supportY); // every check before anything changes
    const labels = asArray(supportY, "support_y").data;
    const width = x.data.length / labels.length;
    if (!state.adapter.ways) $("#ways").value = Math.max(...labels) + 1;
    showClasses();
    state.examples = [...labels].map((label, i) => ({ data: x.data.slice(i * width, (i + 1) * width), label }));
    showExamples();
    adaptNow();
  },
  /** The adapted graph's output for query rows (N, C, H, W): raw values, labels and probabilities. */
  async predict(queryX) {
    const { data, dims } = loaded().checkRows(queryX, "query_x");
    const width = data.length / dims[0];
    const { output, columns } = await classify([...Array(dims[0]).keys()].map((i) => data.slice(i * width, (i + 1) * width)));
    return { shape: output.shape, values: Array.from(output.data), columns };
  },
};
window.mtlDeploy.loading = params.has("export") ? guarded("#model-status", loadUrl)(params.get("export")) : Promise.resolve(null);
