import { test } from "node:test";
import assert from "node:assert/strict";
import { TestMemory, VARIANTS } from "./_util.ts";

// The peak probe (assembly/probe.ts): 12 f32x4 chains acc = acc * s + t.
for (const variant of VARIANTS) {
  test(`peakProbe ${variant}: runs the chains it claims (start values, one step, the fixed point)`, () => {
    const { k } = new TestMemory(variant, 1);
    // No iteration: 4 lanes x (0 + 0.1 + ... + 1.1) = 26.4, in f32.
    assert.ok(Math.abs(k.peakProbe(0, 0.5, 1) - 26.4) < 1e-5);
    // One step with s = 0, t = 1: every lane is 1, 48 lanes.
    assert.equal(k.peakProbe(1, 0, 1), 48);
    // acc = acc/2 + 1 converges to 2 in every lane (exactly, in f32).
    assert.equal(k.peakProbe(200, 0.5, 1), 96);
  });
}
