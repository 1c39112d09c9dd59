import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  csvHeader,
  expandPaths,
  inputColumns,
  type LocatedRecord,
  type RawRecord,
  readCsv,
  readParquet,
  readRecords,
  writeCsv,
  writeParquet,
} from "../src/data/readers.ts";
import { TAOBAO_COLUMNS } from "../src/data/synthetic.ts";

async function withDir(run: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "denorec-data-"));
  try {
    await run(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function collect(rows: AsyncIterable<LocatedRecord>): Promise<LocatedRecord[]> {
  const out: LocatedRecord[] = [];
  for await (const row of rows) out.push(row);
  return out;
}

/** `[location, ...values in header order]` per record: compact expectations. */
async function table(rows: AsyncIterable<LocatedRecord>, columns: string[]): Promise<unknown[][]> {
  return (await collect(rows)).map(({ record, location }) => [
    location,
    ...columns.map((c) => record[c]),
  ]);
}

async function rejectsWith(rows: AsyncIterable<LocatedRecord>, message: string | RegExp) {
  await assert.rejects(collect(rows), { message });
}

const TAOBAO = TAOBAO_COLUMNS;

function taobaoLine(i: number): string {
  return [
    i % 2,
    0,
    1000 + i,
    5,
    3,
    1,
    4,
    "",
    3,
    0,
    "",
    7 * i,
    6406,
    187467,
    62812,
    "",
    9.5,
    "430548_1007",
  ]
    .join(",");
}

// ------------------------------------------------------------------ CSV

test("csv: quoted fields keep delimiters, doubled quotes and line breaks", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "q.csv");
    await writeFile(
      path,
      'id,text,n\n1,"a,b",x\n2,"say ""hi""",y\n3,"two\nlines",z\n4,"three\n\nlines","w\nv"\n5,plain,u\n',
    );
    assert.deepEqual(await table(readCsv(path), ["id", "text", "n"]), [
      [`${path}:2`, "1", "a,b", "x"],
      [`${path}:3`, "2", 'say "hi"', "y"],
      [`${path}:4`, "3", "two\nlines", "z"],
      [`${path}:6`, "4", "three\n\nlines", "w\nv"],
      [`${path}:10`, "5", "plain", "u"],
    ]);
  });
});

test("csv: CRLF line endings, CRLF inside quotes kept, BOM stripped", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "crlf.csv");
    await writeFile(path, '\ufeffclk,note\r\n1,"a\r\nb"\r\n0,x\r\n1,\r\n');
    assert.deepEqual(await csvHeader(path), ["clk", "note"]);
    assert.deepEqual(await table(readCsv(path), ["clk", "note"]), [
      [`${path}:2`, "1", "a\r\nb"],
      [`${path}:4`, "0", "x"],
      [`${path}:5`, "1", ""],
    ]);
  });
});

test("csv: empty fields are empty strings, last row may lack a newline", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "empty.csv");
    await writeFile(path, 'a,b,c\n,,\n1,,3\n,"",x\n,2,');
    assert.deepEqual(await table(readCsv(path), ["a", "b", "c"]), [
      [`${path}:2`, "", "", ""],
      [`${path}:3`, "1", "", "3"],
      [`${path}:4`, "", "", "x"],
      [`${path}:5`, "", "2", ""],
    ]);
  });
});

test("csv: blank lines are skipped but counted; in a one-column file they are empty values", async () => {
  await withDir(async (dir) => {
    const two = join(dir, "two.csv");
    await writeFile(two, "a,b\n\n1,2\n\n\n3,4\n\n");
    assert.deepEqual(await table(readCsv(two), ["a", "b"]), [
      [`${two}:3`, "1", "2"],
      [`${two}:6`, "3", "4"],
    ]);
    const one = join(dir, "one.csv");
    await writeFile(one, "a\n1\n\n2\n");
    assert.deepEqual(await table(readCsv(one), ["a"]), [
      [`${one}:2`, "1"],
      [`${one}:3`, ""],
      [`${one}:4`, "2"],
    ]);
  });
});

test("csv: custom delimiters (tab, semicolon, multi-character)", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "d.tsv");
    await writeFile(path, 'a\tb\n1\t"x\ty"\n2,3\t4\n');
    assert.deepEqual(await table(readCsv(path, { delimiter: "\t" }), ["a", "b"]), [
      [`${path}:2`, "1", "x\ty"],
      [`${path}:3`, "2,3", "4"],
    ]);
    await writeFile(path, "a;b\n1;2\n");
    assert.deepEqual(await table(readCsv(path, { delimiter: ";" }), ["a", "b"]), [
      [`${path}:2`, "1", "2"],
    ]);
    await writeFile(path, "a||b\n1||2|3\n");
    assert.deepEqual(await table(readCsv(path, { delimiter: "||" }), ["a", "b"]), [
      [`${path}:2`, "1", "2|3"],
    ]);
    assert.throws(() => readCsv(path, { delimiter: '"' }), TypeError);
    assert.throws(() => readCsv(path, { delimiter: "" }), TypeError);
    assert.throws(() => readCsv(path, { chunkBytes: 0 }), RangeError);
  });
});

test("csv: a missing or empty header names the file", async () => {
  await withDir(async (dir) => {
    const empty = join(dir, "empty.csv");
    await writeFile(empty, "");
    await rejectsWith(readCsv(empty), `${empty}: empty file, a header row is required`);
    await assert.rejects(csvHeader(empty), {
      message: `${empty}: empty file, a header row is required`,
    });
    const blank = join(dir, "blank.csv");
    await writeFile(blank, "\n1,2\n");
    await rejectsWith(readCsv(blank), `${blank}:1: empty first line, a header row is required`);
    const twice = join(dir, "twice.csv");
    await writeFile(twice, "a,b,a\n1,2,3\n");
    await rejectsWith(readCsv(twice), `${twice}:1: column "a" appears twice`);
    const missing = join(dir, "missing.csv");
    await rejectsWith(readCsv(missing), new RegExp(`^${escape(missing)}: cannot open`));
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

test("csv: a wrong field count throws file:line with expected and actual counts", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "train.csv");
    const lines = [TAOBAO.join(",")];
    for (let i = 0; i < 20; i++) lines.push(taobaoLine(i));
    lines[16] = lines[16].replace(/,[^,]*$/, ""); // line 17: 17 fields
    await writeFile(path, lines.join("\n") + "\n");
    await rejectsWith(readCsv(path), `${path}:17: expected 18 fields, got 17`);
    let yielded = 0;
    await assert.rejects(async () => {
      for await (const _ of readCsv(path)) yielded++;
    }, TypeError);
    assert.equal(yielded, 15, "rows before the bad one are yielded");
  });
});

test("csv: skipBadRows skips, counts and reports each bad row", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "bad.csv");
    await writeFile(path, 'a,b\n1,2\n3\n4,5,6\n7,"x"y\n8,9\n10,"open\n');
    const bad: [string, string][] = [];
    const rows = await table(
      readCsv(path, {
        skipBadRows: true,
        onBadRow: (location, message) => bad.push([location, message]),
      }),
      ["a", "b"],
    );
    assert.deepEqual(rows, [[`${path}:2`, "1", "2"], [`${path}:6`, "8", "9"]]);
    assert.deepEqual(bad, [
      [`${path}:3`, "expected 2 fields, got 1"],
      [`${path}:4`, "expected 2 fields, got 3"],
      [`${path}:5`, "malformed quoted field (text after its closing quote)"],
      [`${path}:7`, "unterminated quoted field"],
    ]);
    await rejectsWith(readCsv(path), `${path}:3: expected 2 fields, got 1`);

    // Without onBadRow: one warning per file with the count and the first one.
    const warnings: unknown[] = [];
    const warn = console.warn;
    console.warn = (...args: unknown[]) => warnings.push(args.join(" "));
    try {
      assert.equal((await collect(readCsv(path, { skipBadRows: true }))).length, 2);
    } finally {
      console.warn = warn;
    }
    assert.deepEqual(warnings, [
      `${path}: skipped 4 bad rows (first: ${path}:3: expected 2 fields, got 1)`,
    ]);
  });
});

test("csv: broken quoting throws with the line where the row starts", async () => {
  await withDir(async (dir) => {
    const open = join(dir, "open.csv");
    await writeFile(open, 'a,b\n1,2\n3,"never\nclosed\n');
    await rejectsWith(readCsv(open), `${open}:3: unterminated quoted field`);
    const trailing = join(dir, "trailing.csv");
    await writeFile(trailing, 'a,b\n1,"x"y\n');
    await rejectsWith(
      readCsv(trailing),
      `${trailing}:2: malformed quoted field (text after its closing quote)`,
    );
  });
});

test("csv: a malformed quote costs one row, even after quoted line breaks", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "m.csv");
    const text = 'a,b\n1,"multi\nline"x,5\n2,3\n"q"z"\n4,"ok ""q"""\n5,"x"""y\n6,7';
    await writeFile(path, text);
    const expectedRows = [[`${path}:4`, "2", "3"], [`${path}:6`, "4", 'ok "q"'], [
      `${path}:8`,
      "6",
      "7",
    ]];
    const expectedBad = [`${path}:2`, `${path}:5`, `${path}:7`];
    for (const chunkBytes of [1, 2, 3, 5, 8, 13, 1 << 20]) {
      const bad: string[] = [];
      const rows = await table(
        readCsv(path, {
          chunkBytes,
          skipBadRows: true,
          onBadRow: (location) => bad.push(location),
        }),
        ["a", "b"],
      );
      assert.deepEqual(rows, expectedRows, `chunkBytes ${chunkBytes}`);
      assert.deepEqual(bad, expectedBad, `chunkBytes ${chunkBytes}`);
    }
    // CRLF: a chunk cut between the closing quote and "\r\n" is no error.
    const crlf = join(dir, "crlf.csv");
    await writeFile(crlf, 'a,b\r\n1,"x"\r\n2,"y"z\r\n3,"w"\r\n');
    for (const chunkBytes of [1, 2, 3, 4, 5, 6, 7]) {
      const bad: string[] = [];
      const rows = await table(
        readCsv(crlf, {
          chunkBytes,
          skipBadRows: true,
          onBadRow: (location) => bad.push(location),
        }),
        ["a", "b"],
      );
      assert.deepEqual(
        rows,
        [[`${crlf}:2`, "1", "x"], [`${crlf}:4`, "3", "w"]],
        `chunkBytes ${chunkBytes}`,
      );
      assert.deepEqual(bad, [`${crlf}:3`], `chunkBytes ${chunkBytes}`);
    }
  });
});

test("csv: a malformed quote early in a big file fails at once", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "big.csv");
    const rest = Array.from({ length: 100_000 }, (_, i) => `${i},x`).join("\n");
    await writeFile(path, `a,b\n1,2\n3,"x"y\n${rest}\n`);
    let yielded = 0;
    await assert.rejects(async () => {
      for await (const _ of readCsv(path, { chunkBytes: 4096 })) yielded++;
    }, { message: `${path}:3: malformed quoted field (text after its closing quote)` });
    assert.equal(yielded, 1);
  });
});

test("csv: invalid UTF-8 names the file and the line of the bad byte", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "latin1.csv");
    await writeFile(path, Uint8Array.of(0x61, 0x0a, 0xe9, 0x0a));
    await rejectsWith(readCsv(path), `${path}:2: not valid UTF-8`);
    // Line 4000 of a file of many chunks, after multi-byte characters and a
    // quoted line break, whatever the chunk size (a bad byte may sit at a
    // chunk edge or a multi-byte character may be cut by one).
    const lines = ["id,text"];
    for (let i = 2; i <= 5000; i++) {
      lines.push(i === 100 ? `${i},"two\nlines é"` : `${i},${i % 7 === 0 ? "€ü😀" : "x"}`);
    }
    const bytes = new TextEncoder().encode(lines.join("\n") + "\n");
    const text = lines.join("\n");
    // Byte offset of line 4000 (the quoted field adds one line).
    const lineStart = new TextEncoder().encode(
      text.split("\n").slice(0, 3999).join("\n") + "\n",
    ).length;
    const bad = bytes.slice();
    bad[lineStart + 2] = 0xff;
    await writeFile(path, bad);
    for (const chunkBytes of [1, 7, 4096, 1 << 20]) {
      await rejectsWith(readCsv(path, { chunkBytes }), `${path}:4000: not valid UTF-8`);
    }
  });
});

test("csv: files without a header row read with the config's input_fields names", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "noheader.csv");
    await writeFile(path, "1,17,a\n0,18,b\n1,19\n");
    const columns = ["clk", "user_id", "pid"];
    assert.deepEqual(await csvHeader(path, { columns }), columns);
    const rows = readCsv(path, { columns, skipBadRows: true, onBadRow: () => {} });
    assert.deepEqual(await table(rows, columns), [
      [`${path}:1`, "1", "17", "a"],
      [`${path}:2`, "0", "18", "b"],
    ]);
    await rejectsWith(readCsv(path, { columns }), `${path}:3: expected 3 fields, got 2`);
    assert.throws(() => readCsv(path, { columns: ["a", "a"] }), /column "a" appears twice/);
  });
});

test("paths: an odps:// table fails at once with one line saying to export it", async () => {
  const table = "odps://{PROJECT}/tables/taobao_multitask_sample_v1_train";
  const message = `${table}: a MaxCompute (ODPS) table cannot be read here; export it to ` +
    "Parquet or CSV and pass the files with --train_input_path / --eval_input_path";
  assert.throws(() => readRecords(table), { message });
  assert.throws(() => readRecords(["data/a.csv", table]), { message });
  assert.throws(() => readCsv(table), { message });
  assert.throws(() => readParquet(table), { message });
  await assert.rejects(inputColumns(table), { message });
  await assert.rejects(csvHeader(table), { message });
});

test("csv: every read chunk size from 1 byte up gives the same records", async () => {
  await withDir(async (dir) => {
    const body = 'id,text,n\n1,"a,b",x\n2,"multi\nline ""q""",y\n\n3,€ü😀,z\n4,"",\n5,"end""",w';
    const expected = [
      ["2", "1", "a,b", "x"],
      ["3", "2", 'multi\nline "q"', "y"],
      ["6", "3", "€ü😀", "z"],
      ["7", "4", "", ""],
      ["8", "5", 'end"', "w"],
    ];
    for (
      const [name, text, crlf] of [["lf.csv", body, false], [
        "crlf.csv",
        body.replaceAll("\n", "\r\n"),
        true,
      ]] as const
    ) {
      const path = join(dir, name);
      await writeFile(path, "\ufeff" + text);
      const want = expected.map(([line, ...values]) => [
        `${path}:${line}`,
        ...values.map((v) => crlf ? v.replaceAll("\n", "\r\n") : v),
      ]);
      for (let chunkBytes = 1; chunkBytes <= 48; chunkBytes++) {
        assert.deepEqual(
          await table(readCsv(path, { chunkBytes }), ["id", "text", "n"]),
          want,
          `${name} with chunkBytes ${chunkBytes}`,
        );
      }
      assert.deepEqual(await table(readCsv(path), ["id", "text", "n"]), want);
    }
  });
});

test("csv: a file of several default (1 MiB) chunks streams with exact line numbers", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "big.csv");
    const header = ["id", "note", ...TAOBAO];
    let text = header.join(",") + "\n";
    let line = 2;
    const expectedLines: number[] = [];
    const rows = 45_000;
    for (let i = 0; i < rows; i++) {
      expectedLines.push(line);
      // Every 997th row carries a quoted two-line note, so some straddle chunks.
      const note = i % 997 === 0 ? `"note ${i}\nsecond ""line"""` : `n${i}`;
      text += `${i},${note},${taobaoLine(i)}\n`;
      line += i % 997 === 0 ? 2 : 1;
    }
    assert.ok(text.length > 3 * (1 << 20), `${text.length} bytes is more than 3 chunks`);
    await writeFile(path, text);
    let count = 0;
    for await (const { record, location } of readCsv(path)) {
      assert.equal(record.id, String(count));
      assert.equal(location, `${path}:${expectedLines[count]}`);
      assert.equal(record.note, count % 997 === 0 ? `note ${count}\nsecond "line"` : `n${count}`);
      assert.equal(record.user_id, String(1000 + count));
      assert.equal(record.pid, "430548_1007");
      count++;
    }
    assert.equal(count, rows);
  });
});

test("csv: csvHeader reads only the header", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "h.csv");
    await writeFile(path, 'clk,"user id",price\n1,2\n"unterminated');
    assert.deepEqual(await csvHeader(path), ["clk", "user id", "price"]);
    assert.deepEqual(await csvHeader(path, { chunkBytes: 3 }), ["clk", "user id", "price"]);
    await writeFile(path, "clk;price");
    assert.deepEqual(await csvHeader(path, { delimiter: ";" }), ["clk", "price"]);
  });
});

test("csv: the result can be iterated again (one pass per epoch)", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "e.csv");
    await writeFile(path, "a\n1\n2\n");
    const rows = readCsv(path);
    const first = await collect(rows);
    assert.equal(first.length, 2);
    assert.deepEqual(await collect(rows), first);
  });
});

// ---------------------------------------------------------- paths/files

test("paths: globs match * and ? in the last segment, sorted, no dot files", async () => {
  await withDir(async (dir) => {
    for (
      const name of [
        "part-2.csv",
        "part-10.csv",
        "part-1.csv",
        "part-a.txt",
        ".part-3.csv",
        "eval.csv",
      ]
    ) {
      await writeFile(join(dir, name), "a\n1\n");
    }
    await mkdir(join(dir, "part-dir.csv"));
    assert.deepEqual(await expandPaths(join(dir, "part-*.csv")), [
      join(dir, "part-1.csv"),
      join(dir, "part-10.csv"),
      join(dir, "part-2.csv"),
    ]);
    assert.deepEqual(await expandPaths([join(dir, "part-?.csv"), join(dir, "eval.csv")]), [
      join(dir, "part-1.csv"),
      join(dir, "part-2.csv"),
      join(dir, "eval.csv"),
    ]);
    assert.deepEqual(await expandPaths(join(dir, ".part-*")), [join(dir, ".part-3.csv")]);
    assert.deepEqual(await expandPaths(join(dir, "none.csv")), [join(dir, "none.csv")]);
    await assert.rejects(expandPaths(join(dir, "x-*.csv")), {
      message: `no files match ${join(dir, "x-*.csv")}`,
    });
    await assert.rejects(
      expandPaths(join(dir, "*", "a.csv")),
      /only supported in the last path segment/,
    );
    await assert.rejects(expandPaths([]), /no input files/);
  });
});

test("csv: several files and globs are read in order, each location names its file", async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, "part-0.csv"), "a,b\n1,2\n3,4\n");
    await writeFile(join(dir, "part-1.csv"), "b,a\n5,6\n");
    await writeFile(join(dir, "part-2.csv"), "a,b\n7,8\n");
    const rows = await table(readCsv(join(dir, "part-*.csv")), ["a", "b"]);
    assert.deepEqual(rows, [
      [`${join(dir, "part-0.csv")}:2`, "1", "2"],
      [`${join(dir, "part-0.csv")}:3`, "3", "4"],
      [`${join(dir, "part-1.csv")}:2`, "6", "5"],
      [`${join(dir, "part-2.csv")}:2`, "7", "8"],
    ]);
    const list = await table(readCsv([join(dir, "part-2.csv"), join(dir, "part-0.csv")]), ["a"]);
    assert.deepEqual(list.map((r) => r[1]), ["7", "1", "3"]);
    await writeFile(join(dir, "other.csv"), "a,c\n1,2\n");
    await rejectsWith(
      readCsv([join(dir, "part-0.csv"), join(dir, "other.csv")]),
      `${join(dir, "other.csv")}:1: columns differ from ${
        join(dir, "part-0.csv")
      }; missing: b; extra: c`,
    );
  });
});

// --------------------------------------------------------------- writing

test("writeCsv: quoting round-trips through readCsv", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "out.csv");
    const values = ["plain", "a,b", 'q"uote', "line\nbreak", "cr\rlf\r\n", " spaced ", "€😀", ""];
    const records: RawRecord[] = values.map((text, i) => ({ id: i, text, semi: `${text};` }));
    assert.equal(await writeCsv(path, ["id", "text", "semi"], records), values.length);
    const back = await collect(readCsv(path));
    assert.deepEqual(
      back.map((r) => r.record),
      values.map((text, i) => ({ id: String(i), text, semi: `${text};` })),
    );
    await writeCsv(path, ["id", "text"], records.slice(0, 2), { delimiter: ";" });
    assert.equal(await readFile(path, "utf8"), "id;text\n0;plain\n1;a,b\n");
  });
});

test("writeCsv: missing values, numbers, bigints, booleans and lists", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "out.csv");
    await writeCsv(path, ["a", "b", "c", "d"], [
      { a: null, b: undefined, c: 0.1 + 0.2, d: [1, 2n, "x"] },
      { a: 2n ** 64n, b: true, c: -0, d: [] },
      { a: 1 },
    ]);
    assert.equal(
      await readFile(path, "utf8"),
      "a,b,c,d\n,,0.30000000000000004,1\x1d2\x1dx\n18446744073709551616,true,0,\n1,,,\n",
    );
    await writeCsv(path, ["tags"], [{ tags: ["a", "b"] }], { listSeparator: "|" });
    assert.equal(await readFile(path, "utf8"), "tags\na|b\n");
    await assert.rejects(writeCsv(path, ["a", "a"], []), /column "a" appears twice/);
  });
});

test("writeCsv: atomic, an error mid-way leaves the old file and no temporary", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "out.csv");
    await writeCsv(path, ["a"], [{ a: 1 }]);
    async function* failing(): AsyncGenerator<RawRecord> {
      yield { a: 2 };
      throw new Error("generator broke");
    }
    await assert.rejects(writeCsv(path, ["a"], failing()), {
      message: `writing CSV ${path}: generator broke`,
    });
    assert.equal(await readFile(path, "utf8"), "a\n1\n");
    assert.deepEqual(await readdir(dir), ["out.csv"]);
    // A big write spans several 1 MiB flushes.
    const rows = Array.from({ length: 50_000 }, (_, i) => ({ a: i, b: "x".repeat(40) }));
    assert.equal(await writeCsv(path, ["a", "b"], rows), rows.length);
    let count = 0;
    for await (const { record } of readCsv(path)) assert.equal(record.a, String(count++));
    assert.equal(count, rows.length);
    assert.deepEqual(await readdir(dir), ["out.csv"]);
  });
});

// -------------------------------------------------------------- Parquet

test("parquet: round trip of scalars, nulls, big ints and lists over several row groups", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "train.parquet");
    const rows: RawRecord[] = Array.from({ length: 10 }, (_, i) => ({
      clk: i % 2,
      user_id: i === 3 ? 2n ** 62n + 1n : BigInt(1000 + i),
      price: i === 4 ? null : i + 0.25,
      pid: i === 5 ? null : `430548_${i}€`,
      flag: i % 3 === 0,
      tags: i === 6 ? null : Array.from({ length: i % 3 }, (_, k) => `t${k}`),
      ids: [i, i + 1],
      weights: i === 7 ? [] : [0.5 * i],
    }));
    const columns = ["clk", "user_id", "price", "pid", "flag", "tags", "ids", "weights"];
    assert.equal(await writeParquet(path, columns, rows, { rowGroupSize: 3 }), 10);
    const back = await collect(readParquet(path));
    assert.deepEqual(back.map((r) => r.location), rows.map((_, i) => `${path}:row ${i + 1}`));
    assert.deepEqual(
      back.map((r) => r.record),
      rows.map((row, i) => ({ ...row, user_id: i === 3 ? 2n ** 62n + 1n : 1000 + i })),
    );
    const some = await collect(readParquet(path, { columns: ["pid", "clk"] }));
    assert.deepEqual(some[5].record, { pid: null, clk: 1 });
    assert.deepEqual(await readdir(dir), ["train.parquet"]);
  });
});

test("parquet: CSV records written with explicit types, async source, globbed reads", async () => {
  await withDir(async (dir) => {
    async function* part(offset: number): AsyncGenerator<RawRecord> {
      for (let i = 0; i < 4; i++) {
        yield {
          clk: String((i + offset) % 2),
          price: i === 2 ? "" : `${i}.5`,
          tags: [`${offset + i}`],
        };
      }
    }
    const types = { clk: "int64", price: "double", tags: "int64[]" } as const;
    for (const offset of [0, 4]) {
      await writeParquet(
        join(dir, `part-${offset}.parquet`),
        ["clk", "price", "tags"],
        part(offset),
        { types },
      );
    }
    const back = await table(readParquet(join(dir, "part-*.parquet")), ["clk", "price", "tags"]);
    assert.deepEqual(back.map((r) => r.slice(1)), [
      [0, 0.5, [0]],
      [1, 1.5, [1]],
      [0, null, [2]],
      [1, 3.5, [3]],
      [0, 0.5, [4]],
      [1, 1.5, [5]],
      [0, null, [6]],
      [1, 3.5, [7]],
    ]);
    assert.equal(back[4][0], `${join(dir, "part-4.parquet")}:row 1`);
  });
});

test("parquet: empty input writes a readable file with no rows", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "empty.parquet");
    assert.equal(await writeParquet(path, ["a", "b"], []), 0);
    assert.deepEqual(await collect(readParquet(path)), []);
  });
});

test("parquet: errors name the file (and row and column)", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "t.parquet");
    await writeParquet(path, ["a"], [{ a: 1 }, { a: 2 }]);
    await rejectsWith(readParquet(path, { columns: ["b"] }), `${path}: no column "b" (columns: a)`);
    const notParquet = join(dir, "x.parquet");
    await writeFile(notParquet, "a,b\n1,2\n");
    await rejectsWith(
      readParquet(notParquet),
      new RegExp(`^${escape(notParquet)}: not a readable Parquet file`),
    );
    await rejectsWith(readParquet(join(dir, "none.parquet")), /none\.parquet: cannot open/);
    await assert.rejects(
      writeParquet(path, ["a"], [{ a: 1 }, { a: 1.5 }], { rowGroupSize: 1 }),
      { message: `writing Parquet ${path}: row 2, column "a": "1.5" is not int64` },
    );
    await assert.rejects(
      writeParquet(path, ["a"], [{ a: [1] }], { types: { a: "string" } }),
      /row 1, column "a": expected string, got a list/,
    );
    assert.deepEqual((await collect(readParquet(path))).map((r) => r.record), [{ a: 1 }, { a: 2 }]);
    assert.deepEqual((await readdir(dir)).sort(), ["t.parquet", "x.parquet"]);
  });
});
