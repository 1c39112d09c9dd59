// Config text fuzzing: mutations of configs/mmoe_taobao.config (tests/_fuzz_config_cases.ts)
// are accepted or refused with a ConfigError naming the place, never another exception or a
// hang. FUZZ_ITERATIONS=5000 for a long run, FUZZ_SEED for another sequence.
import { test } from "node:test";
import { iterations, runIsolated } from "./_fuzz.ts";

test("fuzz config: mutated config text is accepted or a ConfigError naming its place", async () => {
  const tally = await runIsolated(
    new URL("./_fuzz_config_cases.ts", import.meta.url),
    iterations(200),
    5000,
  );
  tally.report("config");
});
