// CSV input fuzzing of examples/predict.ts (tests/_fuzz_csv_cases.ts): random dialects and
// faults; every run writes exactly Predictor.predict's outputs or fails with an error naming
// the file and line. FUZZ_ITERATIONS=5000 for a long run, FUZZ_SEED for another sequence.
import { test } from "node:test";
import { iterations, runIsolated } from "./_fuzz.ts";

test("fuzz csv: predict.ts scores every file correctly or names the file and line", async () => {
  const tally = await runIsolated(
    new URL("./_fuzz_csv_cases.ts", import.meta.url),
    iterations(200),
    10000,
  );
  tally.report("csv (predict.ts)");
});
