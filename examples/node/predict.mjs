#!/usr/bin/env node
/**
 * Predict with an mtl_deploy export in Node.js (onnxruntime-node, no Python):
 *
 *   node predict.mjs EXPORT_DIR --input rows.csv            every task's output
 *   node predict.mjs ADAPTER_DIR --support support.json --input query.json
 *
 * Rows come from a .json (nested arrays; an object of arrays by input name for a model of
 * several inputs) or a .csv of numbers (a header row is optional). An adapter export first
 * adapts on the support set, a .json {"x": rows, "y": class ids or target rows}. Prints one
 * JSON object per row: a class task's label and probability (the raw values with --logits),
 * a regression task's values, as `mtl-deploy predict --output rows.json` writes them.
 * Bad input prints one line on stderr and exits 2; a broken export exits 1.
 */

import { existsSync, readFileSync, realpathSync } from "node:fs";
import { availableParallelism } from "node:os";
import { dirname, extname, join } from "node:path";
import { parseArgs } from "node:util";

import ort from "onnxruntime-node";

import { ExportError, FewShotAdapter, InputError, openExport, tableRows } from "../web/client.mjs";

const NUMBER = /^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$/;

function readJson(path, what) {
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new (what === "manifest" ? ExportError : InputError)(`${path} could not be read as JSON (${err.message.slice(0, 160)})`);
  }
}

/** Rows of numbers from a CSV: the first row is a header when any of its cells is not a number. */
function readCsv(path) {
  const lines = readFileSync(path, "utf8").replace(/^\uFEFF/, "").split(/\r?\n/)
    .map((text, i) => [i + 1, text.split(",")]).filter(([, cells]) => cells.join("").trim());
  if (lines.length === 0) throw new InputError(`${path} has no rows`);
  const width = lines[0][1].length;
  const header = lines[0][1].some((cell) => cell.trim() && !NUMBER.test(cell));
  return lines.slice(header ? 1 : 0).map(([line, cells]) => {
    if (cells.length !== width) throw new InputError(`${path}: line ${line} has ${cells.length} fields, the first row ${width}`);
    return cells.map((cell, j) => {
      if (!NUMBER.test(cell)) throw new InputError(`${path}: line ${line}, column ${j + 1} is not a number: ${JSON.stringify(cell.slice(0, 40))}`);
      return Number(cell);
    });
  });
}

function readRows(path) {
  if (!existsSync(path)) throw new InputError(`input file '${path}' does not exist; give a .json or .csv of rows`);
  const kind = extname(path);
  if (kind === ".json") return readJson(path, "rows");
  if (kind === ".csv") return readCsv(path);
  throw new InputError(`${path}: unknown input type '${kind}'; use .json or .csv`);
}

/** The export's model, opened as the manifest says; its file must be a plain file inside `dir`. */
async function open(dir) {
  const where = join(dir, "manifest.json");
  if (!existsSync(dir)) throw new InputError(`'${dir}' does not exist; give an export directory`);
  if (!existsSync(where)) throw new InputError(`${dir} is not an export directory: it has no manifest.json`);
  const read = (name) => {
    const path = join(dir, name);
    if (!existsSync(path)) throw new ExportError(`${path} is missing; export again`);
    if (dirname(realpathSync(path)) !== realpathSync(dir)) throw new ExportError(`${where} names an artifact that leads outside ${dir}; export again`);
    return path;
  };
  const threads = Math.min(4, availableParallelism());
  return openExport(ort, readJson(where, "manifest"), where, read, { intraOpNumThreads: threads, interOpNumThreads: 1 });
}

async function main() {
  const { values: options, positionals } = parseArgs({
    allowPositionals: true,
    options: { input: { type: "string" }, support: { type: "string" }, task: { type: "string" }, logits: { type: "boolean", default: false } },
  });
  if (positionals.length !== 1 || !options.input) throw new InputError("usage: node predict.mjs EXPORT_DIR --input ROWS.(json|csv) [--support SUPPORT.json] [--task NAME] [--logits]");
  const model = await open(positionals[0]);
  const rows = readRows(options.input);
  let predictions, kinds;
  if (model instanceof FewShotAdapter) {
    const support = options.support && readJson(options.support, "support");
    if (!support || !("x" in support) || !("y" in support)) {
      throw new InputError("an adapter export adapts first: give --support SUPPORT.json, an object with x (rows) and y (their labels)");
    }
    const adapted = model.adapt(support.x, support.y);
    predictions = { [model.task.name]: await adapted.predict(rows) };
    kinds = { [model.task.name]: model.task.kind };
  } else {
    if (options.support) throw new InputError("--support is for adapter exports; this export predicts as it is");
    predictions = await model.predict(rows, options.task ?? null);
    kinds = Object.fromEntries(Object.entries(model.tasks).map(([name, spec]) => [name, spec.kind]));
  }
  process.stdout.write(JSON.stringify(tableRows(predictions, kinds, options.logits), null, 1) + "\n");
}

main().catch((err) => {
  const known = err instanceof InputError || err instanceof ExportError || err.code?.startsWith("ERR_PARSE_ARGS");
  process.stderr.write(known ? `error: ${err.message}\n` : `${err.stack}\n`);
  process.exit(err instanceof ExportError ? 1 : known ? 2 : 1);
});
