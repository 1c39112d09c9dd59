// Plain TypeScript twin of assembly/activation.ts: f64, textbook formulas.
import { Activation } from "../../src/kernels/kernels.ts";

/**
 * erf in f64 from the all-positive series erf(x) = (2/sqrt(pi)) e^(-x^2)
 * sum_n x (2x^2)^n / (2n+1)!! (no cancellation, ~1e-16 relative); +-1 for
 * |x| >= 6, where erfc < 2e-17.
 */
export function erfTwin(x: number): number {
  const t = Math.abs(x);
  if (Number.isNaN(x)) return NaN;
  if (t >= 6) return Math.sign(x);
  let term = t, sum = t;
  for (let n = 1; term > sum * 1e-17; n++) {
    term *= (2 * t * t) / (2 * n + 1);
    sum += term;
  }
  return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * Math.exp(-t * t) * sum;
}

function sigmoid(v: number): number {
  return 1 / (1 + Math.exp(-v));
}

/** act(v) for one value; `act` is an {@link Activation} code. */
export function activationTwin(v: number, act: number, slope = 0.01): number {
  switch (act) {
    case Activation.identity:
      return v;
    case Activation.relu:
      return Math.max(v, 0);
    case Activation.sigmoid:
      return sigmoid(v);
    case Activation.tanh:
      return Math.tanh(v);
    case Activation.leakyRelu:
      return v > 0 ? v : slope * v;
    case Activation.gelu:
      return 0.5 * v * (1 + erfTwin(v / Math.SQRT2));
    case Activation.silu:
      return v * sigmoid(v);
  }
  throw new RangeError(`unknown activation ${act}`);
}

/** y[b,h] = act(x[b,h] + bias[h]) over B x H. */
export function biasActivationTwin(
  x: ArrayLike<number>,
  bias: ArrayLike<number> | undefined,
  B: number,
  H: number,
  act: number,
  slope = 0.01,
): Float64Array {
  const y = new Float64Array(B * H);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      y[b * H + h] = activationTwin(x[b * H + h] + (bias ? bias[h] : 0), act, slope);
    }
  }
  return y;
}

/**
 * dx = dy * act'(x). ReLU, Sigmoid and Tanh use the forward output y (as
 * torch's autograd does: y > 0, y (1 - y), 1 - y^2); the others use x.
 */
export function activationBackwardTwin(
  dy: ArrayLike<number>,
  x: ArrayLike<number>,
  y: ArrayLike<number>,
  n: number,
  act: number,
  slope = 0.01,
): Float64Array {
  const dx = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const v = x[i], out = y[i];
    let grad: number;
    switch (act) {
      case Activation.identity:
        grad = 1;
        break;
      case Activation.relu:
        grad = out > 0 ? 1 : 0;
        break;
      case Activation.sigmoid:
        grad = out * (1 - out);
        break;
      case Activation.tanh:
        grad = 1 - out * out;
        break;
      case Activation.leakyRelu:
        grad = v > 0 ? 1 : slope;
        break;
      case Activation.gelu:
        grad = 0.5 * (1 + erfTwin(v / Math.SQRT2)) +
          (v * Math.exp(-0.5 * v * v)) / Math.sqrt(2 * Math.PI);
        break;
      case Activation.silu: {
        const s = sigmoid(v);
        grad = s * (1 + v * (1 - s));
        break;
      }
      default:
        throw new RangeError(`unknown activation ${act}`);
    }
    dx[i] = dy[i] * grad;
  }
  return dx;
}

/** out0[h] + sum over b of x[b,h], x is B x H with rows `ld` apart (default H). */
export function columnSumTwin(
  out0: ArrayLike<number>,
  x: ArrayLike<number>,
  B: number,
  H: number,
  ld = H,
): Float64Array {
  const out = Float64Array.from(out0);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) out[h] += x[b * ld + h];
  }
  return out;
}
