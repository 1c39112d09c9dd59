// HTTP fuzzing of the scoring handler (tests/_fuzz_http_cases.ts): random requests in process,
// and a subset over a loopback server with raw TCP. Every answer is a 2xx with exactly the
// outputs of Predictor.predict on the same rows, or a 4xx/503 JSON error; never a 500, a
// hang, a non-JSON body or internals. FUZZ_ITERATIONS=5000 for a long run (the loopback
// subset is a tenth), FUZZ_SEED for another sequence.
import { test } from "node:test";
import { iterations, runIsolated } from "./_fuzz.ts";

const CASES = new URL("./_fuzz_http_cases.ts", import.meta.url);

test("fuzz http: the handler in process answers every request correctly or with a JSON error", async () => {
  const tally = await runIsolated(CASES, iterations(400), 10000);
  tally.report("http (handler)");
});

test("fuzz http: the same over a loopback server (raw TCP: Host, content-length lies, half bodies)", async () => {
  const tally = await runIsolated(
    CASES,
    Math.max(20, Math.round(iterations(400) / 10)),
    10000,
    "createLoopbackRunner",
  );
  tally.report("http (loopback)");
});
