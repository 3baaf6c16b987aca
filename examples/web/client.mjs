/**
 * mtl_deploy exports in JavaScript, for onnxruntime-node and onnxruntime-web alike (the
 * caller passes its `ort` module in): the manifest names every input, output and task, and
 * an adapter export is fed exactly as the Python FewShotAdapter feeds it, so both runtimes
 * give the Python runtime's numbers. Arrays are nested arrays (as JSON gives them) or
 * {data, shape} with a flat typed array; results are {data, shape}.
 */

/** Bad input the caller can fix: the message names the problem and the fix. */
export class InputError extends Error {}

/** A broken export: a manifest or model that should be exported again. */
export class ExportError extends Error {}

const FORMATS = ["mtl_deploy.export", "mtl_deploy.adapter"];
const ARRAYS = { float32: Float32Array, int64: BigInt64Array, int32: Int32Array };
const size = (shape) => shape.reduce((a, b) => a * b, 1);
const show = (shape) => `[${shape.join(", ")}]`;

/** The manifest's model file name, refused unless the manifest is an export's and the name
 * stays inside the export directory (no path parts). */
function artifactName(manifest, where) {
  if (!FORMATS.includes(manifest?.format)) {
    const kind = manifest?.format === "mtl_deploy.checkpoint" ? "a checkpoint's" : "not an mtl_deploy export's";
    throw new InputError(`${where} is ${kind} manifest; give an export directory (mtl-deploy export CHECKPOINT --out DIR)`);
  }
  const name = manifest.artifact;
  if (typeof name !== "string" || !Array.isArray(manifest.inputs)) throw new ExportError(`${where} is corrupt (no artifact or inputs); export again`);
  if (["", ".", ".."].includes(name) || /[/\\]/.test(name)) {
    throw new ExportError(`${where} names the artifact ${JSON.stringify(name.slice(0, 80))} outside its directory; export again`);
  }
  if ((manifest.artifact_format ?? "onnx") !== "onnx") {
    throw new InputError(`${where} is a ${manifest.artifact_format} export; these clients run ONNX exports (--format onnx)`);
  }
  return name;
}

/** A Predictor or FewShotAdapter (by the manifest's format, read from `where`); `read(name)`
 * gives the model file as InferenceSession.create takes it (a path in Node, bytes in a browser). */
export async function openExport(ort, manifest, where, read, options = {}) {
  const name = artifactName(manifest, where);
  const model = await read(name);
  let session;
  try {
    session = await ort.InferenceSession.create(model, { graphOptimizationLevel: "all", ...options });
  } catch (err) {
    throw new ExportError(`ONNX Runtime cannot load ${name} of ${where} (${String(err.message).split("\n")[0].slice(0, 200)}); export again`);
  }
  return manifest.format === "mtl_deploy.adapter" ? new FewShotAdapter(ort, manifest, session) : new Predictor(ort, manifest, session);
}

/** `values` as {data, shape}: rectangular, numeric and finite, or an InputError naming `name`. */
export function asArray(values, name) {
  let data, shape;
  if (values !== null && typeof values === "object" && "data" in values && "shape" in values) {
    ({ data, shape } = values);
    if (data.length !== size(shape)) throw new InputError(`${name} has ${data.length} values for shape ${show(shape)}`);
  } else {
    shape = [];
    for (let level = values; Array.isArray(level); level = level[0]) shape.push(level.length);
    data = [];
    flatten(values, shape, 0, data, name);
  }
  for (const value of data) {
    if (typeof value !== "number" && typeof value !== "bigint") throw new InputError(`${name} must be numeric, got ${JSON.stringify(value)?.slice(0, 40)}`);
    if (typeof value === "number" && !Number.isFinite(value)) throw new InputError(`${name} contains NaN or inf; clean it first`);
  }
  return { data, shape };
}

function flatten(values, shape, depth, out, name) {
  if (depth === shape.length) {
    out.push(values);
    return;
  }
  if (!Array.isArray(values) || values.length !== shape[depth]) throw new InputError(`${name} is not a rectangular array`);
  for (const value of values) flatten(value, shape, depth + 1, out, name);
}

/** The session's output as {data, shape}, refused when the model computed NaN or inf. */
function finite(tensor) {
  const width = size(tensor.dims.slice(1));
  const bad = tensor.data.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0) {
    throw new ExportError(`the model computed NaN or inf (first in row ${Math.floor(bad / width)}); check that input's scale against the training data`);
  }
  return { data: tensor.data, shape: [...tensor.dims] };
}

/** `predict(inputs)` -> {task: {data, shape}}: `inputs` is an array for a model of one input,
 * or an object of arrays by input name; each is checked against the manifest. */
export class Predictor {
  constructor(ort, manifest, session) {
    if (manifest.routed) throw new InputError("this is a routed export; serve its mixed batches with the Python runtime (mtl-deploy predict --task-ids)");
    this.ort = ort;
    this.manifest = manifest;
    this.session = session;
    this.inputs = manifest.inputs;
    this.tasks = manifest.tasks;
  }

  feeds(inputs) {
    const names = this.inputs.map((i) => i.name);
    const byName = inputs !== null && typeof inputs === "object" && !Array.isArray(inputs) && !("shape" in inputs);
    if (!byName && names.length > 1) throw new InputError(`this model takes ${names.length} inputs ${JSON.stringify(names)}; pass an object of arrays by name`);
    const given = byName ? inputs : { [names[0]]: inputs };
    const unknown = Object.keys(given).filter((n) => !names.includes(n));
    const missing = names.filter((n) => !(n in given));
    if (unknown.length || missing.length) {
      throw new InputError(`this model takes inputs ${JSON.stringify(names)}; ` + (missing.length ? `missing ${JSON.stringify(missing)}` : `unknown ${JSON.stringify(unknown)}`));
    }
    const sizes = {};
    return Object.fromEntries(this.inputs.map((entry) => [entry.name, this.feed(entry, given[entry.name], sizes, names.length === 1)]));
  }

  feed(entry, values, sizes, oneInput) {
    const { name, shape, dtype } = entry;
    let array = asArray(values, oneInput ? "inputs" : `input '${name}'`);
    const fits = (a) => a.shape.length === shape.length && shape.slice(1).every((d, i) => typeof d === "string" || d === a.shape[i + 1]);
    if (oneInput && !fits(array) && array.shape.length === shape.length - 1) array = { data: array.data, shape: [1, ...array.shape] }; // one row
    if (!fits(array)) {
      throw new InputError(oneInput ? `inputs have rows of shape ${show(array.shape.slice(1))}; this model takes ${show(shape.slice(1))} (input '${name}')`
                                    : `input '${name}' has shape ${show(array.shape)}; this model takes ${show(shape)}`);
    }
    if (array.shape[0] === 0) throw new InputError("inputs have no rows; give at least one");
    const Typed = ARRAYS[dtype];
    if (!Typed) throw new InputError(`input '${name}' is ${dtype}; these clients feed ${Object.keys(ARRAYS).join(", ")}`);
    if (dtype !== "float32") {
      if (array.data.some((v) => typeof v === "number" && !Number.isInteger(v))) throw new InputError(`input '${name}' takes integers (${dtype}), got fractional values`);
      const [low, high] = entry.range ?? [-Infinity, Infinity];
      if (array.data.some((v) => v < low || v >= high)) throw new InputError(`input '${name}' takes values in [${low}, ${high})`);
    }
    shape.forEach((dim, axis) => {
      if (typeof dim !== "string") return;
      const first = (sizes[dim] ??= [name, array.shape[axis]]);
      if (first[1] !== array.shape[axis]) throw new InputError(`axis '${dim}' is ${first[1]} in input '${first[0]}' but ${array.shape[axis]} in '${name}'`);
    });
    const data = dtype === "int64" ? BigInt64Array.from(array.data, (v) => BigInt(v)) : Typed.from(array.data, Number);
    return new this.ort.Tensor(dtype, data, array.shape);
  }

  /** Every task's output, or only `task`'s. */
  async predict(inputs, task = null) {
    if (task !== null && !(task in this.tasks)) throw new InputError(`unknown task '${task}'; this model has ${JSON.stringify(Object.keys(this.tasks).sort())}`);
    const names = task ? [this.tasks[task].output] : this.manifest.outputs.map((o) => o.name);
    const outputs = await this.session.run(this.feeds(inputs), names);
    const wanted = task ? [task] : Object.keys(this.tasks);
    return Object.fromEntries(wanted.map((t) => [t, finite(outputs[this.tasks[t].output])]));
  }
}

/** `adapt(supportX, supportY)` -> an AdaptedTask whose `predict(queryX)` runs the adapter
 * graph on that support set: labels are class ids (one-hot encoded here) or regression
 * target rows, as for the Python FewShotAdapter. */
export class FewShotAdapter {
  constructor(ort, manifest, session) {
    this.ort = ort;
    this.manifest = manifest;
    this.session = session;
    this.rowShape = manifest.inputs[0].shape.slice(1);
    this.task = manifest.task;
  }

  /** The number of classes a support set may have: fixed by the graph, or null (any). */
  get ways() {
    const fixed = this.manifest.inputs[1].shape[1];
    return this.task.kind === "regression" || fixed === "ways" ? null : fixed;
  }

  checkRows(x, name) {
    const array = asArray(x, name);
    const same = array.shape.length === this.rowShape.length + 1 && this.rowShape.every((d, i) => d === array.shape[i + 1]);
    if (!same || array.shape[0] === 0) throw new InputError(`${name} must be (rows >= 1, ${this.rowShape.join(", ")}), got ${show(array.shape)}`);
    return new this.ort.Tensor("float32", Float32Array.from(array.data, Number), array.shape);
  }

  /** Class ids -> one-hot rows; regression targets -> (S, out) values. */
  encodeLabels(supportY) {
    const y = asArray(supportY, "support_y");
    const rows = y.shape[0] ?? 0;
    if (y.shape.length === 0 || rows === 0) throw new InputError("support_y is empty; give one label (or target row) per support row");
    const values = Array.from(y.data, Number);
    if (this.task.kind === "regression") {
      const width = this.task.out_dim;
      if (values.length !== rows * width) throw new InputError(`support_y must be (rows, ${width}) regression targets, got ${show(y.shape)}`);
      return new this.ort.Tensor("float32", Float32Array.from(values), [rows, width]);
    }
    if (y.shape.length !== 1 || !values.every(Number.isInteger)) throw new InputError("support_y must be class ids 0..N-1, one per support row");
    const low = Math.min(...values), high = Math.max(...values);
    // every class needs a support row, so there are never more ways than rows
    const ways = this.ways ?? (high >= 0 && high < rows ? high + 1 : rows + 1);
    if (low < 0 || high >= ways) throw new InputError(`support labels must be class ids in 0..${ways - 1}, got values from ${low} to ${high}`);
    const missing = [...Array(ways).keys()].filter((c) => !values.includes(c));
    if (missing.length) throw new InputError(`support labels must cover every class 0..${ways - 1}: class(es) ${missing.slice(0, 8).join(", ")} have no support row`);
    const oneHot = new Float32Array(rows * ways);
    values.forEach((label, row) => { oneHot[row * ways + label] = 1; });
    return new this.ort.Tensor("float32", oneHot, [rows, ways]);
  }

  adapt(supportX, supportY) {
    const x = this.checkRows(supportX, "support_x");
    const y = this.encodeLabels(supportY);
    if (y.dims[0] !== x.dims[0]) throw new InputError(`${x.dims[0]} support rows but ${y.dims[0]} labels`);
    return new AdaptedTask(this, x, y);
  }
}

/** A predictor bound to one support set: each call runs the adapter graph on it. */
export class AdaptedTask {
  constructor(adapter, supportX, supportY) {
    this.adapter = adapter;
    this.supportX = supportX;
    this.supportY = supportY;
  }

  get ways() {
    return this.supportY.dims[1];
  }

  async predict(queryX) {
    const feeds = { support_x: this.supportX, support_y: this.supportY, query_x: this.adapter.checkRows(queryX, "query_x") };
    return finite((await this.adapter.session.run(feeds, ["query_pred"])).query_pred);
  }
}

/** One task's output as named columns, as the Python runtime's `task_columns`: a class
 * task's label and probability (the raw values with `logits`), else its values. */
export function taskColumns(name, output, kind, logits = false) {
  const rows = output.shape[0], width = size(output.shape.slice(1));
  const row = (i) => Array.from(output.data.subarray(i * width, (i + 1) * width), Number);
  const range = [...Array(rows).keys()];
  if (kind === "multiclass" && !logits) {
    const softmax = range.map((i) => {
      const values = row(i), top = Math.max(...values);
      const shifted = values.map((v) => Math.exp(v - top));
      const total = shifted.reduce((a, b) => a + b, 0);
      return shifted.map((v) => v / total);
    });
    return { [name]: softmax.map((p) => p.indexOf(Math.max(...p))), [`${name}_probability`]: softmax.map((p) => Math.max(...p)) };
  }
  if (kind === "binary" && !logits) {
    const probability = range.map((i) => 1 / (1 + Math.exp(-row(i)[0])));
    return { [name]: probability.map((p) => (p > 0.5 ? 1 : 0)), [`${name}_probability`]: probability };
  }
  if (width === 1) return { [name]: range.map((i) => row(i)[0]) };
  return Object.fromEntries([...Array(width).keys()].map((j) => [`${name}_${j}`, range.map((i) => row(i)[j])]));
}

/** Predictions ({task: output}) as one object per row, every task's columns side by side
 * (the rows the Python `mtl-deploy predict --output rows.json` writes). */
export function tableRows(predictions, kinds, logits = false) {
  const columns = Object.assign({}, ...Object.entries(predictions).map(([task, output]) => taskColumns(task, output, kinds[task], logits)));
  const rows = Object.values(columns)[0].length;
  return [...Array(rows).keys()].map((i) => Object.fromEntries(Object.entries(columns).map(([name, values]) => [name, values[i]])));
}
