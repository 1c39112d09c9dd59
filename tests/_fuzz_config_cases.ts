// Fuzz cases for config text (tests/fuzz_config_test.ts): one to three
// mutations of random tokens of configs/mmoe_taobao.config (delete,
// duplicate, retype, garble, swap, insert), then parsePipelineConfig +
// resolveConfig. Each case must be accepted or throw a ConfigError naming
// its place: `mmoe_taobao.config:<line>:<col>: <field>: ...` from the text
// parser; resolveConfig's checks name the field path (the file position of
// a semantic error is not known to resolveConfig yet; those are counted as a
// note). Any other exception is a crash.
import { readFileSync } from "node:fs";
import { ConfigError, resolveConfig } from "../src/config/config.ts";
import { ConfigTextError, parsePipelineConfig } from "../src/config/config_text.ts";
import { type CaseResult, type CaseRunner, draws } from "./_fuzz.ts";

/** The source name errors must start with. */
export const SOURCE = "mmoe_taobao.config";

interface Token {
  start: number;
  end: number;
  kind: "string" | "word" | "punct";
}

/** Strings (with escapes), words (identifiers, numbers) and punctuation, outside comments. */
function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  const pattern = /#[^\n]*|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|[\w.+-]+|[{}[\]:,<>;]/g;
  for (const match of text.matchAll(pattern)) {
    const token = match[0];
    if (token.startsWith("#")) continue;
    const kind = token.startsWith('"') || token.startsWith("'")
      ? "string"
      : /^[{}[\]:,<>;]$/.test(token)
      ? "punct"
      : "word";
    tokens.push({ start: match.index!, end: match.index! + token.length, kind });
  }
  return tokens;
}

const REPLACEMENTS = [
  '"x"',
  '""',
  '"\\u0000"',
  '"\\xff"',
  '"unterminated',
  "0",
  "-1",
  "1e40",
  "3.5",
  "99999999999999999999",
  "nan",
  "inf",
  "-inf",
  "-0",
  "0x10",
  "1e-50",
  "true",
  "false",
  "DEEP",
  "WIDE",
  "FG_DAG",
  "num_expert",
  "__proto__",
  "constructor",
  "{",
  "}",
  "[",
  "]",
  ":",
  ",",
  ";",
  "<",
  ">",
  "#",
  "\n",
  "\u00e9",
  "\ud83d\ude00",
  "\ud800",
  "\\",
];

const GARBLE = ['"', "\\", "{", "}", "\n", "\u0000", "\u00ff", "-", ".", "e", "0", " ", "\ud800"];

/** `text` with one to three random token mutations, and what was done. */
function mutate(text: string, random: () => number): { text: string; what: string[] } {
  const { int, pick } = draws(random);
  const what: string[] = [];
  for (let m = 1 + int(3); m > 0; m--) {
    const tokens = tokenize(text);
    if (tokens.length === 0) break;
    const token = pick(tokens);
    const source = text.slice(token.start, token.end);
    const before = text.slice(0, token.start), after = text.slice(token.end);
    switch (int(6)) {
      case 0:
        text = before + after;
        what.push(`delete ${JSON.stringify(source)}@${token.start}`);
        break;
      case 1:
        text = before + source + " " + source + after;
        what.push(`duplicate ${JSON.stringify(source)}@${token.start}`);
        break;
      case 2: {
        const replacement = pick(REPLACEMENTS);
        text = before + replacement + after;
        what.push(
          `retype ${JSON.stringify(source)}@${token.start} -> ${JSON.stringify(replacement)}`,
        );
        break;
      }
      case 3: {
        const at = int(source.length);
        const char = pick(GARBLE);
        const garbled = source.slice(0, at) + char + source.slice(at + int(2));
        text = before + garbled + after;
        what.push(`garble ${JSON.stringify(source)}@${token.start} -> ${JSON.stringify(garbled)}`);
        break;
      }
      case 4: {
        const other = pick(tokens);
        if (other.start <= token.start) break;
        const second = text.slice(other.start, other.end);
        text = before + second + text.slice(token.end, other.start) + source +
          text.slice(other.end);
        what.push(`swap ${JSON.stringify(source)}@${token.start} ${JSON.stringify(second)}`);
        break;
      }
      default: {
        const other = pick(tokens);
        const inserted = text.slice(other.start, other.end);
        text = before + inserted + " " + source + after;
        what.push(`insert ${JSON.stringify(inserted)}@${token.start}`);
      }
    }
  }
  return { text, what };
}

/** Cases over configs/mmoe_taobao.config. */
export function createRunner(): Promise<CaseRunner> {
  const original = readFileSync(new URL("../configs/mmoe_taobao.config", import.meta.url), "utf8");
  return Promise.resolve((_i: number, random: () => number): Promise<CaseResult> => {
    const { text, what } = mutate(original, random);
    const detail = what.join("; ");
    const lines = text.split("\n").length;
    try {
      resolveConfig(parsePipelineConfig(text, SOURCE));
      return Promise.resolve({ outcome: "accepted", detail });
    } catch (error) {
      if (error instanceof ConfigTextError) {
        const place = /^mmoe_taobao\.config:(\d+):(\d+): /.exec(error.message);
        const ok = place !== null && Number(place[1]) >= 1 && Number(place[1]) <= lines &&
          Number(place[2]) >= 1;
        if (!ok) {
          return Promise.resolve({
            outcome: "crash",
            detail: `${detail}: badly located: ${error.message}`,
          });
        }
        // txtpb quotes a bad escape as is: `invalid escape \<line break>` (the CLIs print one line).
        const note = error.message.includes("\n") ? "message holds a line break" : undefined;
        return Promise.resolve({ outcome: "clear error", detail, note });
      }
      if (error instanceof ConfigError) {
        // resolveConfig: the message starts with the field path.
        const ok = error.path !== "" && error.message.startsWith(`${error.path}: `);
        return Promise.resolve(
          ok ? { outcome: "clear error", detail, note: "semantic error: field, no file:line" } : {
            outcome: "crash",
            detail: `${detail}: ${error.message}`,
          },
        );
      }
      return Promise.resolve({
        outcome: "crash",
        detail: `${detail}: ${(error as Error)?.name}: ${(error as Error)?.message}`,
      });
    }
  });
}
