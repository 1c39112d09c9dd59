// End-to-end: examples/train.ts on generated Taobao-schema data with a small
// model (tests/fixtures/mmoe_taobao_small.config), as a user runs it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";

const ROOT = new URL("..", import.meta.url).pathname;
const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined";

function runExample(script: string, args: string[]) {
  const command = isDeno
    ? ["run", "-A", join(ROOT, script), ...args]
    : [join(ROOT, script), ...args];
  const result = spawnSync(process.execPath, command, {
    encoding: "utf8",
    cwd: ROOT,
    timeout: 240_000,
  });
  if (result.status !== 0) {
    assert.fail(`${script} exited with ${result.status}:\n${result.stdout}\n${result.stderr}`);
  }
  return result.stdout;
}

test("cli: train.ts generates data, trains, evaluates and writes train_eval_result.txt near the oracle", () => {
  const dir = mkdtempSync(join(tmpdir(), "denorec-cli-"));
  try {
    const modelDir = join(dir, "model");
    const stdout = runExample("examples/train.ts", [
      "--pipeline_config_path",
      join(ROOT, "tests/fixtures/mmoe_taobao_small.config"),
      "--train_input_path",
      join(dir, "train.csv"),
      "--eval_input_path",
      join(dir, "eval.csv"),
      "--model_dir",
      modelDir,
      "--train_rows",
      "100000",
      "--eval_rows",
      "30000",
    ]);
    const result = JSON.parse(readFileSync(join(modelDir, "train_eval_result.txt"), "utf8"));
    assert.deepEqual(Object.keys(result).sort(), [
      "auc_ctr",
      "auc_cvr",
      "binary_cross_entropy_ctr",
      "binary_cross_entropy_cvr",
    ]);
    const oracle = (task: string) =>
      Number(stdout.match(new RegExp(`auc_${task} .*oracle AUC[^:]*: ([0-9.]+)`))![1]);
    // Measured: auc_ctr 0.608 (oracle 0.734), auc_cvr 0.616 (oracle 0.828) on 100k rows. The
    // generated world is as hard as the real data: 1M rows reach 0.630 / 0.646.
    assert.ok(result.auc_ctr > 0.58, `auc_ctr ${result.auc_ctr}`);
    assert.ok(
      result.auc_ctr > oracle("ctr") - 0.16,
      `auc_ctr ${result.auc_ctr} vs oracle ${oracle("ctr")}`,
    );
    assert.ok(result.auc_cvr > 0.55, `auc_cvr ${result.auc_cvr}`);
    assert.ok(
      result.auc_cvr > oracle("cvr") - 0.3,
      `auc_cvr ${result.auc_cvr} vs oracle ${oracle("cvr")}`,
    );
    assert.ok(existsSync(join(modelDir, "model.safetensors")));
    const report = readFileSync(join(modelDir, "report.html"), "utf8");
    assert.ok(report.includes("Mean gate weight") && report.includes("ROC ctr"));
    // eval.ts on the saved model reproduces the training run's evaluation.
    runExample("examples/eval.ts", [
      "--model_dir",
      modelDir,
      "--eval_input_path",
      join(dir, "eval.csv"),
    ]);
    const evalResult = JSON.parse(readFileSync(join(modelDir, "eval_result.txt"), "utf8"));
    for (const [name, value] of Object.entries(result)) {
      assert.ok(
        Math.abs(evalResult[name] - (value as number)) < 1e-9,
        `${name}: ${evalResult[name]} vs ${value}`,
      );
    }
    // predict.ts writes reserved columns and scores for every row.
    const predictions = join(dir, "predictions.csv");
    runExample("examples/predict.ts", [
      "--model_dir",
      modelDir,
      "--predict_input_path",
      join(dir, "eval.csv"),
      "--predict_output_path",
      predictions,
      "--reserved_columns",
      "user_id,clk",
      "--output_columns",
      "probs_ctr,probs_cvr",
    ]);
    const lines = readFileSync(predictions, "utf8").trimEnd().split("\n");
    assert.equal(lines[0], "user_id,clk,probs_ctr,probs_cvr");
    assert.equal(lines.length, 30_001);
    const [, , pCtr, pCvr] = lines[1].split(",").map(Number);
    assert.ok(pCtr > 0 && pCtr < 1 && pCvr > 0 && pCvr < 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("cli: a config whose columns the generator lacks and missing inputs is refused clearly", () => {
  const dir = mkdtempSync(join(tmpdir(), "denorec-cli-"));
  try {
    const config = readFileSync(join(ROOT, "tests/fixtures/mmoe_taobao_small.config"), "utf8")
      .replace('expression: "item:brand"', 'expression: "item:brand_name"');
    const path = join(dir, "pipeline.config");
    writeFileSync(path, config);
    const command = isDeno
      ? ["run", "-A", join(ROOT, "examples/train.ts")]
      : [join(ROOT, "examples/train.ts")];
    const result = spawnSync(process.execPath, [
      ...command,
      "--pipeline_config_path",
      path,
      "--train_input_path",
      join(dir, "none.csv"),
      "--eval_input_path",
      join(dir, "none_eval.csv"),
    ], { encoding: "utf8", cwd: dir });
    assert.notEqual(result.status, 0);
    assert.match(result.stderr, /no column 'brand_name' \(feature brand\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("cli: kernels_demo.ts trains its MLP from the raw kernels close to the oracle AUC", () => {
  const stdout = runExample("examples/kernels_demo.ts", ["--epochs", "2"]);
  const [, auc, oracle] = stdout.match(
    /eval AUC ([0-9.]+) \(oracle AUC of the true probabilities ([0-9.]+)\)/,
  )!;
  // Measured: 0.7200 vs oracle 0.7282.
  assert.ok(Number(auc) > Number(oracle) - 0.03, `${auc} vs oracle ${oracle}`);
});
