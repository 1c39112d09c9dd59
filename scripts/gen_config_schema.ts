/**
 * Generates two modules from tzrec's protos (`proto/tzrec/protos/`) and the
 * table of what this library runs (`src/config/support.ts`):
 *
 * - `src/config/types.ts`, the typed config: one interface per tzrec message
 *   the table lists, with the fields that run (or are accepted and ignored),
 *   tzrec's comments, the default and the table's note as JSDoc;
 * - `src/config/schema.ts`: `DEFAULTS`, tzrec's default of every field that
 *   runs, and `SCHEMA`, every field of those messages (run or not), which
 *   `resolveConfig` walks to refuse unknown fields and fields that do not run.
 *
 * It also checks the table against the protos: every message, field and enum
 * value it names must exist in tzrec's schema.
 *
 * Usage (run by `deno task proto` after `buf generate`):
 *   deno run -A scripts/gen_config_schema.ts           write both modules
 *   deno run -A scripts/gen_config_schema.ts --check   exit 1 if either is stale
 */
import { type DescField, type DescMessage, fromBinary, ScalarType } from "@bufbuild/protobuf";
import { createFileRegistry } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type FieldSupport, NOTES, SUPPORT } from "../src/config/support.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const TYPES = join(ROOT, "src", "config", "types.ts");
const SCHEMA_OUT = join(ROOT, "src", "config", "schema.ts");
const PACKAGE = "tzrec.protos";

/** tzrec message names that would clash with other exports of the library. */
const RENAMES: Record<string, string> = {
  AUC: "AucConfig",
  GroupedAUC: "GroupedAucConfig",
  ExactAUC: "ExactAucConfig",
  Accuracy: "AccuracyConfig",
  MeanAbsoluteError: "MeanAbsoluteErrorConfig",
  MeanSquaredError: "MeanSquaredErrorConfig",
  Field: "InputField",
};

/** tzrec's descriptors with source info (comments), built by buf. */
export function loadDescriptors(): ReturnType<typeof createFileRegistry> {
  const dir = mkdtempSync(join(tmpdir(), "denorec-schema-"));
  try {
    const out = join(dir, "tzrec.binpb");
    const buf = spawnSync(
      join(ROOT, "node_modules", ".bin", "buf"),
      ["build", join(ROOT, "proto"), "--as-file-descriptor-set", "-o", out],
      { encoding: "utf8" },
    );
    if (buf.status !== 0) throw new Error(`buf build failed: ${buf.stderr || buf.error}`);
    return createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(out)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The leading comment of a message or field, without comment markers. */
export function commentOf(desc: DescMessage | DescField): string {
  const path: number[] = [];
  let message: DescMessage;
  if (desc.kind === "field") {
    message = desc.parent;
    path.push(2, message.proto.field.indexOf(desc.proto));
  } else message = desc;
  for (let m: DescMessage = message;;) {
    const parent = m.parent;
    if (parent === undefined) {
      path.unshift(4, m.file.messages.indexOf(m));
      break;
    }
    path.unshift(3, parent.nestedMessages.indexOf(m));
    m = parent;
  }
  const location = message.file.proto.sourceCodeInfo?.location.find((l) =>
    l.path.length === path.length && l.path.every((p, i) => p === path[i])
  );
  return (location?.leadingComments ?? "").trim().split("\n").map((l) => l.trim()).join("\n");
}

const SCALAR_NAMES: Record<number, string> = {
  [ScalarType.DOUBLE]: "double",
  [ScalarType.FLOAT]: "float",
  [ScalarType.INT64]: "int64",
  [ScalarType.UINT64]: "uint64",
  [ScalarType.INT32]: "int32",
  [ScalarType.FIXED64]: "fixed64",
  [ScalarType.FIXED32]: "fixed32",
  [ScalarType.BOOL]: "bool",
  [ScalarType.STRING]: "string",
  [ScalarType.BYTES]: "bytes",
  [ScalarType.UINT32]: "uint32",
  [ScalarType.SFIXED32]: "sfixed32",
  [ScalarType.SFIXED64]: "sfixed64",
  [ScalarType.SINT32]: "sint32",
  [ScalarType.SINT64]: "sint64",
};

/** One field as the runtime schema and the generators describe it. */
export interface FieldInfo {
  field: DescField;
  /** Proto type name: a scalar (`uint32`), `enum`, `message` or `map`. */
  type: string;
  repeated: boolean;
  map: boolean;
  /** Enum value names. */
  values?: string[];
  /** tzrec's default: the explicit `[default]`, else proto2's zero value (singular scalars and enums). */
  fallback?: string | number | boolean;
  /** Whether `[default = ...]` is written in the proto. */
  explicitDefault: boolean;
  support: FieldSupport | undefined;
}

export function fieldInfo(field: DescField): FieldInfo {
  const support = SUPPORT[field.parent.name]?.[field.name];
  const repeated = field.fieldKind === "list";
  const map = field.fieldKind === "map";
  const scalar = field.fieldKind === "scalar"
    ? field.scalar
    : field.fieldKind === "list" && field.listKind === "scalar"
    ? field.scalar
    : undefined;
  const enumDesc = field.fieldKind === "enum"
    ? field.enum
    : field.fieldKind === "list" && field.listKind === "enum"
    ? field.enum
    : undefined;
  const type = map
    ? "map"
    : scalar !== undefined
    ? SCALAR_NAMES[scalar]
    : enumDesc
    ? "enum"
    : "message";
  const info: FieldInfo = {
    field,
    type,
    repeated,
    map,
    explicitDefault: field.proto.defaultValue !== undefined && field.proto.defaultValue !== "",
    support,
  };
  if (enumDesc) info.values = enumDesc.values.map((v) => v.name);
  if (field.fieldKind === "scalar") {
    const value = field.getDefaultValue();
    const zero = field.scalar === ScalarType.STRING
      ? ""
      : field.scalar === ScalarType.BOOL
      ? false
      : field.scalar === ScalarType.BYTES
      ? undefined
      : 0;
    info.fallback = value === undefined
      ? zero
      : typeof value === "bigint"
      ? Number(value)
      : value as string | number | boolean;
  } else if (field.fieldKind === "enum") {
    const value = (field.getDefaultValue() as number | undefined) ?? field.enum.values[0].number;
    info.fallback = field.enum.values.find((v) => v.number === value)!.name;
  }
  return info;
}

/** The messages of the table, checked against the protos, in schema walk order. */
export function supportedMessages(registry: ReturnType<typeof createFileRegistry>): DescMessage[] {
  const problems: string[] = [];
  const messages: DescMessage[] = [];
  for (const [name, fields] of Object.entries(SUPPORT)) {
    const desc = registry.getMessage(`${PACKAGE}.${name}`);
    if (desc === undefined) {
      problems.push(`support table: no tzrec message ${name}`);
      continue;
    }
    messages.push(desc);
    for (const [fieldName, support] of Object.entries(fields)) {
      const field = desc.fields.find((f) => f.name === fieldName);
      if (field === undefined) {
        problems.push(`support table: ${name} has no field ${fieldName}`);
        continue;
      }
      const target = field.message;
      if (
        target !== undefined && field.fieldKind !== "map" && support !== "ignored" &&
        SUPPORT[target.name] === undefined
      ) {
        problems.push(`support table: ${name}.${fieldName} runs, but ${target.name} is not listed`);
      }
      if (Array.isArray(support)) {
        const values = fieldInfo(field).values;
        if (values === undefined) problems.push(`support table: ${name}.${fieldName} is no enum`);
        for (const v of support) {
          if (!values?.includes(v)) problems.push(`support table: ${name}.${fieldName}: no ${v}`);
        }
      }
    }
  }
  for (const key of Object.keys(NOTES)) {
    const [message, field] = key.split(".");
    if (!registry.getMessage(`${PACKAGE}.${message}`)?.fields.some((f) => f.name === field)) {
      problems.push(`notes: no tzrec field ${key}`);
    }
  }
  if (problems.length > 0) throw new Error(problems.join("\n"));
  return messages;
}

const typeName = (message: DescMessage): string => RENAMES[message.name] ?? message.name;

function tsType(info: FieldInfo): string {
  const { field, type } = info;
  let element: string;
  if (type === "map") return "Record<string, unknown>";
  if (type === "enum") {
    const values = Array.isArray(info.support) ? info.support : info.values!;
    element = values.map((v) => JSON.stringify(v)).join(" | ");
  } else if (type === "message") {
    const message = field.message!;
    element = SUPPORT[message.name] !== undefined ? typeName(message) : "Record<string, unknown>";
  } else if (type === "bool") element = "boolean";
  else if (type === "string") element = "string";
  else element = "number";

  return info.repeated ? (element.includes("|") ? `(${element})[]` : `${element}[]`) : element;
}

function docComment(lines: string[], indent: string): string {
  const body = lines.join("\n").replaceAll("*/", "*\\/").split("\n");
  return `${indent}/**\n${
    body.map((l) => `${indent} *${l === "" ? "" : ` ${l}`}`).join("\n")
  }\n${indent} */\n`;
}

function showDefault(value: string | number | boolean): string {
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}

const HEADER = `// Generated by scripts/gen_config_schema.ts from proto/tzrec/protos/ and
// src/config/support.ts (\`deno task proto\`). Do not edit.
`;

function generate(): { types: string; schema: string } {
  const registry = loadDescriptors();
  const messages = supportedMessages(registry);
  let out = `${HEADER}/**
 * The typed tzrec pipeline config: one interface per tzrec message this
 * library reads, holding the fields it runs (and the ones it accepts and
 * ignores), with tzrec's field names in camelCase. \`EasyRecConfig\` is the
 * whole \`pipeline.config\`.
 *
 * @example
 * \`\`\`ts
 * import assert from "node:assert/strict";
 * import type { IdFeature } from "./types.ts";
 * const feature: IdFeature = { featureName: "user_id", embeddingDim: 16, numBuckets: 100 };
 * assert.equal(feature.pooling, undefined); // unset: tzrec's default "sum" applies
 * \`\`\`
 * @module
 */

`;
  const defaults: string[] = [];
  const schema: string[] = [];
  for (const message of messages) {
    const fields = message.fields.map(fieldInfo);
    const shown = fields.filter((f) => f.support !== undefined);
    const comment = commentOf(message);
    const head = [
      ...(comment ? [comment, ""] : []),
      `tzrec \`${message.name}\` (${message.file.name.replace(/^tzrec\/protos\//, "")}.proto).`,
    ];
    if (shown.length === 0) {
      out += docComment([...head, "It has no fields."], "");
      out += `export type ${typeName(message)} = Record<string, never>;\n\n`;
    } else {
      out += docComment(head, "");
      out += `export interface ${typeName(message)} {\n`;
      for (const info of shown) {
        const { field, support } = info;
        const lines: string[] = [];
        const fieldComment = commentOf(field);
        if (fieldComment) lines.push(fieldComment, "");
        const kind = `${info.repeated ? "repeated " : ""}${info.type}`;
        let summary = `\`${field.name}\` (${kind})`;
        if (support === "required") summary += ", required";
        if (support === "ignored") summary += ", accepted and ignored";
        if (field.oneof) summary += `, one of \`${field.oneof.name}\``;
        if (info.explicitDefault && info.fallback !== undefined) {
          summary += `. Default ${showDefault(info.fallback)}`;
        }
        if (Array.isArray(support) && support.length < info.values!.length) {
          summary += `. Runs: ${support.join(", ")}`;
        }
        lines.push(`${summary}.`);
        const note = NOTES[`${message.name}.${field.name}`];
        if (note) lines.push(note);
        out += docComment(lines, "  ");
        out += `  ${field.localName}${support === "required" ? "" : "?"}: ${tsType(info)};\n`;
      }
      out += "}\n\n";
    }
    const runDefaults = fields.filter((f) =>
      f.support !== undefined && f.support !== "ignored" && f.explicitDefault &&
      f.fallback !== undefined && !f.repeated
    );
    if (runDefaults.length > 0) {
      defaults.push(
        `  ${message.name}: {\n${
          runDefaults.map((f) => `    ${f.field.localName}: ${showDefault(f.fallback!)},`).join(
            "\n",
          )
        }\n  },`,
      );
    }
    schema.push(
      `  ${message.name}: [\n${
        fields.map((f) => {
          const entry: Record<string, unknown> = {
            name: f.field.name,
            json: f.field.localName,
            type: f.type,
          };
          if (f.repeated) entry.repeated = true;
          if (f.field.oneof) entry.oneof = f.field.oneof.name;
          if (f.type === "message" && SUPPORT[f.field.message!.name] !== undefined) {
            entry.message = f.field.message!.name;
          }
          if (f.values) entry.values = f.values;
          if (f.fallback !== undefined) entry.fallback = f.fallback;
          if (f.support !== undefined) entry.support = f.support;
          const props = Object.entries(entry).map(([k, v]) => `${k}: ${JSON.stringify(v)}`);
          return `    { ${props.join(", ")} },`;
        }).join("\n")
      }\n  ],`,
    );
  }
  const schemaText = `${HEADER}/**
 * tzrec's defaults of the fields this library runs, and the schema of every
 * message it reads, generated from tzrec's protos and \`support.ts\`.
 *
 * @example
 * \`\`\`ts
 * import assert from "node:assert/strict";
 * import { DEFAULTS, SCHEMA } from "./schema.ts";
 * assert.equal(DEFAULTS.IdFeature.pooling, "sum");
 * assert.equal(SCHEMA.MMoE.length, 4);
 * \`\`\`
 * @module
 */
import type { MessageSchema } from "./support.ts";

/**
 * tzrec's default of every field this library runs that has one in the
 * proto (\`[default = ...]\`), by message and field:
 * \`DEFAULTS.IdFeature.pooling\` is \`"sum"\`.
 *
 * @example
 * \`\`\`ts
 * import assert from "node:assert/strict";
 * import { DEFAULTS } from "./schema.ts";
 * assert.equal(DEFAULTS.MMoE.numExpert, 3);
 * \`\`\`
 */
export const DEFAULTS = {
${defaults.join("\n")}
} as const;

/**
 * Every field of the messages above, run or not, by message: what
 * \`resolveConfig\` checks a config against.
 *
 * @example
 * \`\`\`ts
 * import assert from "node:assert/strict";
 * import { SCHEMA } from "./schema.ts";
 * assert.ok(SCHEMA.IdFeature.some((f) => f.name === "zch" && f.support === undefined));
 * \`\`\`
 */
export const SCHEMA: { readonly [message: string]: MessageSchema } = {
${schema.join("\n")}
};
`;
  return { types: format(out), schema: format(schemaText) };
}

function format(text: string): string {
  const deno = spawnSync(
    join(ROOT, "node_modules", ".bin", "deno"),
    ["fmt", "--config", join(ROOT, "deno.json"), "--ext", "ts", "-"],
    { input: text, encoding: "utf8" },
  );
  if (deno.status !== 0) throw new Error(`deno fmt failed: ${deno.stderr}`);
  return deno.stdout;
}

if (import.meta.main) {
  const { types, schema } = generate();
  const outputs: [string, string][] = [[TYPES, types], [SCHEMA_OUT, schema]];
  if (Deno.args.includes("--check")) {
    let stale = false;
    for (const [path, text] of outputs) {
      let current = "";
      try {
        current = readFileSync(path, "utf8");
      } catch {
        // missing: stale
      }
      if (current !== text) {
        console.error(`${path} is stale: run deno task proto`);
        stale = true;
      }
    }
    if (stale) Deno.exit(1);
    console.log("src/config/types.ts and schema.ts are up to date");
  } else {
    for (const [path, text] of outputs) {
      writeFileSync(path, text);
      console.log(`wrote ${path}`);
    }
  }
}
