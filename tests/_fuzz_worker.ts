// Child process of the fuzz harness (tests/_fuzz.ts): imports the case module
// named by the task in argv, runs cases [from, to) one after the other and
// reports each start and result as a line on stdout, so that the parent can
// time every case out.
import process from "node:process";
import {
  caseRandom,
  type CaseResult,
  type CaseRunner,
  MESSAGE,
  type WorkerMessage,
  type WorkerTask,
} from "./_fuzz.ts";

const task = JSON.parse(process.argv[process.argv.length - 1]) as WorkerTask;
const post = (message: WorkerMessage) =>
  process.stdout.write(MESSAGE + JSON.stringify(message) + "\n");
const module = await import(task.module) as Record<string, () => Promise<CaseRunner>>;
const run = await module[task.runner]();
for (let i = task.from; i < task.to; i++) {
  post({ type: "start", i });
  let result: CaseResult;
  try {
    result = await run(i, caseRandom(task.seed, i));
  } catch (error) {
    // The case code itself failed: never expected, always reported.
    result = { outcome: "crash", detail: `${(error as Error)?.stack ?? error}` };
  }
  post({ type: "done", i, result: { ...result, detail: `case ${i}: ${result.detail ?? ""}` } });
}
post({ type: "finished" });
process.exit(0);
