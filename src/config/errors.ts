/**
 * Config errors, and where a config read from text came from: the text reader
 * (`config_text.ts`) registers a locator for the object it returns, so that
 * `resolveConfig` (which never loads the text parser) can name the
 * `file:line:column` of a field it refuses.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ConfigError, ConfigTextError, locate, registerLocator } from "./errors.ts";
 * const config = {};
 * registerLocator(config, "my.config", () => ({ line: 3, column: 5 }));
 * const error = locate(config, new ConfigError("model_config.mmoe.num_expert", "must be at least 1, got 0"));
 * assert.ok(error instanceof ConfigTextError);
 * assert.equal(error.message, "my.config:3:5: model_config.mmoe.num_expert: must be at least 1, got 0");
 * ```
 * @module
 */

/**
 * A config field is missing, malformed, out of range or not supported yet:
 * the message is `<field path>: <what>`, the path in tzrec's names
 * (`model_config.mmoe.task_towers[1].mlp.hidden_units`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ConfigError } from "./errors.ts";
 * const error = new ConfigError("data_config.batch_size", "must be at least 1, got 0");
 * assert.equal(error.message, "data_config.batch_size: must be at least 1, got 0");
 * assert.equal(error.detail, "must be at least 1, got 0");
 * ```
 */
export class ConfigError extends Error {
  /** tzrec field path, e.g. `model_config.mmoe.num_expert` ("" for the whole config). */
  readonly path: string;
  /** What is wrong, without location or path. */
  readonly detail: string;

  /** Creates the error `${path}: ${detail}`. */
  constructor(path: string, detail: string) {
    super(path === "" ? detail : `${path}: ${detail}`);
    this.name = "ConfigError";
    this.path = path;
    this.detail = detail;
  }
}

/**
 * A {@link ConfigError} located in the config text: the message reads
 * `source:line:column: <field path>: <what>`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ConfigError, ConfigTextError } from "./errors.ts";
 * const error = new ConfigTextError("data_config.batch_size", "must be at least 1, got 0", "x.config", 7, 5);
 * assert.ok(error instanceof ConfigError);
 * assert.equal(error.message, "x.config:7:5: data_config.batch_size: must be at least 1, got 0");
 * ```
 */
export class ConfigTextError extends ConfigError {
  /** Name of the text, usually its file path. */
  readonly source: string;
  /** 1-based line of the offending field or token. */
  readonly line: number;
  /** 1-based column (UTF-16 code units) of the offending field or token. */
  readonly column: number;

  /** Creates the error `${source}:${line}:${column}: ${path}: ${detail}`. */
  constructor(path: string, detail: string, source: string, line: number, column: number) {
    super(path, detail);
    this.name = "ConfigTextError";
    this.source = source;
    this.line = line;
    this.column = column;
    this.message = `${source}:${line}:${column}: ${path === "" ? "" : `${path}: `}${detail}`;
  }
}

/** Line and column of a field path in a config text (of the path or its nearest ancestor). */
export type Locator = (path: string) => { line: number; column: number };

const LOCATORS = new WeakMap<object, { source: string; locator: Locator }>();

/**
 * Records that `config` was read from the text `source`, with `locator`
 * mapping field paths to positions in it.
 *
 * @example
 * ```ts
 * import { registerLocator } from "./errors.ts";
 * registerLocator({}, "x.config", () => ({ line: 1, column: 1 }));
 * ```
 */
export function registerLocator(config: object, source: string, locator: Locator): void {
  LOCATORS.set(config, { source, locator });
}

/**
 * `error` located in the text `config` was read from, or `error` itself for a
 * config built in code (or an error that is located already).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ConfigError, locate } from "./errors.ts";
 * const error = new ConfigError("model_config", "is required");
 * assert.equal(locate({}, error), error);
 * ```
 */
export function locate(config: object, error: ConfigError): ConfigError {
  const where = LOCATORS.get(config);
  if (where === undefined || error instanceof ConfigTextError) return error;
  const { line, column } = where.locator(error.path);
  return new ConfigTextError(error.path, error.detail, where.source, line, column);
}
