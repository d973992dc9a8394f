/**
 * Shardline's wasm training kernels must compute exactly what the reference cpu backend computes
 * (within float32 rounding) for every convolution geometry, through the kernels directly and
 * through tf.grad, must train a small CNN to the same weights, and must leak nothing.
 *
 * Everything is computed on cpu first (copied out to plain arrays), then on wasm.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  registerWasmTrainingKernels,
  wasmBatchMatMulConfig,
  wasmConv2DBackpropFilterConfig,
  wasmConv2DBackpropInputConfig,
  wasmMaxPoolGradConfig,
} from '../src/backends/wasmTrainingKernels.js';

// Registered before the wasm backend initialises, which is the harder of the two orders: the
// engine then runs our kernels' setup functions rather than the stock ones'.
registerWasmTrainingKernels();

/** Max |actual - expected| allowed, relative to the largest |expected| (at least 1). */
const REL_TOL = 1e-4;

type Pad =
  | 'same'
  | 'valid'
  | number
  | [[number, number], [number, number], [number, number], [number, number]];
type Shape4 = [number, number, number, number];

/** Deterministic values, independent of either backend's random generator. */
function values(size: number, seed: number, integers = false): Float32Array {
  let state = seed >>> 0 || 1;
  const out = new Float32Array(size);
  for (let i = 0; i < size; i++) {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const u = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    out[i] = integers ? Math.floor(u * 5) - 2 : u * 2 - 1;
  }
  return out;
}

const size = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** Worst |a - e| relative to max(1, max |e|); NaN where they disagree on NaN-ness. */
function relError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) return Number.POSITIVE_INFINITY;
  let scale = 1;
  for (let i = 0; i < expected.length; i++)
    scale = Math.max(scale, Math.abs(expected[i] as number));
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i] as number;
    const e = expected[i] as number;
    if (Number.isNaN(a) !== Number.isNaN(e)) return Number.NaN;
    if (!Number.isNaN(e)) worst = Math.max(worst, Math.abs(a - e) / scale);
  }
  return worst;
}

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string): void {
  const err = relError(actual, expected);
  expect(err, `${what}: relative error ${err} exceeds ${REL_TOL}`).toBeLessThanOrEqual(REL_TOL);
}

interface ConvCase {
  name: string;
  xShape: Shape4; // NHWC or NCHW, per dataFormat
  filterShape: Shape4;
  strides: [number, number];
  dilations: [number, number];
  pad: Pad;
  dataFormat: 'NHWC' | 'NCHW';
  dyShape: Shape4;
  x: Float32Array;
  filter: Float32Array;
  dy: Float32Array;
}

function convCase(
  seed: number,
  [n, h, w, cin]: Shape4,
  filterShape: Shape4,
  strides: [number, number],
  d: number,
  pad: Pad,
  dataFormat: 'NHWC' | 'NCHW',
): ConvCase {
  const xShape: Shape4 = dataFormat === 'NHWC' ? [n, h, w, cin] : [n, cin, h, w];
  const dilations: [number, number] = [d, d];
  const info = tf.backend_util.computeConv2DInfo(
    xShape,
    filterShape,
    strides,
    dilations,
    pad,
    undefined,
    false,
    dataFormat === 'NHWC' ? 'channelsLast' : 'channelsFirst',
  );
  const dyShape = info.outShape as Shape4;
  return {
    name:
      `#${seed} x=[${xShape}] ${dataFormat} k=${filterShape.join('x')} s=${strides} d=${d} ` +
      `pad=${JSON.stringify(pad)} dy=[${dyShape}]`,
    xShape,
    filterShape,
    strides,
    dilations,
    pad,
    dataFormat,
    dyShape,
    x: values(size(xShape), 1000 + seed),
    filter: values(size(filterShape), 2000 + seed),
    dy: values(size(dyShape), 3000 + seed),
  };
}

/**
 * The grid: every kernel size (square, asymmetric, 1x1 to 7x7) x stride 1/2/3 x dilation 1/2 x
 * same/valid/explicit padding, with batch 1..3, channels 1..5 and odd and even sizes rotating
 * through the cases; every seventh case also runs NCHW and some strides are asymmetric. A few
 * cases with many channels follow, since XNNPACK picks other micro-kernels for those.
 */
function convGrid(): ConvCase[] {
  const kernels: [number, number][] = [
    [1, 1],
    [2, 2],
    [3, 3],
    [5, 5],
    [7, 7],
    [3, 2],
    [2, 5],
  ];
  const cases: ConvCase[] = [];
  let i = 0;
  for (const [kh, kw] of kernels) {
    for (const s of [1, 2, 3]) {
      for (const d of [1, 2]) {
        for (const padKind of ['same', 'valid', 'explicit'] as const) {
          const n = 1 + (i % 3);
          const cin = 1 + (i % 5);
          const cout = 1 + ((2 * i + 3) % 5);
          const strides: [number, number] = i % 4 === 3 ? [s, 1 + ((s + 1) % 3)] : [s, s];
          const h = (kh - 1) * d + 1 + (i % 4);
          const w = (kw - 1) * d + 1 + ((i + 1) % 5);
          const pad: Pad =
            padKind !== 'explicit'
              ? padKind
              : i % 5 === 0
                ? 1 // a single number means that padding on every side
                : [
                    [0, 0],
                    [i % 3, (i + 1) % 4],
                    // Sometimes wider than the kernel: rows of pure padding in the output.
                    [(i + 2) % 3 === 0 ? kw + 1 : 0, i % 2],
                    [0, 0],
                  ];
          for (const format of i % 7 === 0 ? (['NHWC', 'NCHW'] as const) : (['NHWC'] as const)) {
            cases.push(convCase(i, [n, h, w, cin], [kh, kw, cin, cout], strides, d, pad, format));
          }
          i++;
        }
      }
    }
  }
  cases.push(
    convCase(i++, [2, 7, 7, 16], [3, 3, 16, 33], [1, 1], 1, 'same', 'NHWC'),
    convCase(i++, [3, 14, 13, 8], [7, 7, 8, 12], [2, 2], 1, 'same', 'NHWC'),
    convCase(i++, [4, 9, 9, 24], [3, 3, 24, 20], [1, 1], 2, 'valid', 'NHWC'),
    convCase(i++, [1, 28, 28, 1], [7, 7, 1, 64], [1, 1], 1, 'same', 'NHWC'),
  );
  return cases;
}

/**
 * tfjs's gradient kernels take no dilation, so the cpu reference for dilation d uses the
 * equivalent dilated filter (zeros between the taps) with dilation 1.
 */
function dilateFilter(
  f: Float32Array,
  [kh, kw, cin, cout]: Shape4,
  d: number,
): { data: Float32Array; shape: Shape4 } {
  const keh = (kh - 1) * d + 1;
  const kew = (kw - 1) * d + 1;
  const data = new Float32Array(keh * kew * cin * cout);
  const block = cin * cout;
  for (let a = 0; a < kh; a++) {
    for (let b = 0; b < kw; b++) {
      const from = (a * kw + b) * block;
      data.set(f.subarray(from, from + block), (a * d * kew + b * d) * block);
    }
  }
  return { data, shape: [keh, kew, cin, cout] };
}

/** Picks the taps of a dilated filter's gradient that belong to the real filter. */
function undilateFilter(g: Float32Array, [kh, kw, cin, cout]: Shape4, d: number): Float32Array {
  const kew = (kw - 1) * d + 1;
  const out = new Float32Array(kh * kw * cin * cout);
  const block = cin * cout;
  for (let a = 0; a < kh; a++) {
    for (let b = 0; b < kw; b++) {
      const from = (a * d * kew + b * d) * block;
      out.set(g.subarray(from, from + block), (a * kw + b) * block);
    }
  }
  return out;
}

interface ConvResult {
  dx: Float32Array;
  dw: Float32Array;
  /** Through tf.grads of a real tf.conv2d, where {@link hasTfGradient}. */
  gradX?: Float32Array;
  gradW?: Float32Array;
}

const read = (t: tf.Tensor): Float32Array => Float32Array.from(t.dataSync());

/** tf.tidy for a function that returns plain arrays (tidy's own type wants tensors). */
function tidy<T>(fn: () => T): T {
  let out: T | undefined;
  tf.tidy(() => {
    out = fn();
  });
  return out as T;
}

/** The cpu backend's answer, computed without our kernels (they exist only for wasm). */
function cpuConv(c: ConvCase): ConvResult {
  return tidy(() => {
    const d = c.dilations[0];
    const dilated = dilateFilter(c.filter, c.filterShape, d);
    const x = tf.tensor4d(c.x, c.xShape);
    const dy = tf.tensor4d(c.dy, c.dyShape);
    const attrs = { strides: c.strides, pad: c.pad, dataFormat: c.dataFormat };
    const dx = tf
      .engine()
      .runKernel(
        'Conv2DBackpropInput',
        { dy, filter: tf.tensor4d(dilated.data, dilated.shape) },
        { ...attrs, inputShape: c.xShape },
      ) as tf.Tensor;
    const dwDilated = tf
      .engine()
      .runKernel(
        'Conv2DBackpropFilter',
        { x, dy },
        { ...attrs, filterShape: dilated.shape },
      ) as tf.Tensor;
    const result: ConvResult = {
      dx: read(dx),
      dw: undilateFilter(read(dwDilated), c.filterShape, d),
    };
    if (hasTfGradient(c)) Object.assign(result, gradsOf(c));
    return result;
  });
}

/** tfjs has no conv2d gradient for dilation > 1, and wasm has no NCHW forward conv2d. */
const hasTfGradient = (c: ConvCase): boolean => c.dilations[0] === 1 && c.dataFormat === 'NHWC';

function gradsOf(c: ConvCase): { gradX: Float32Array; gradW: Float32Array } {
  return tidy(() => {
    const conv = (x: tf.Tensor, f: tf.Tensor) =>
      tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, c.strides, c.pad);
    const [gx, gw] = tf.grads(conv)(
      [tf.tensor4d(c.x, c.xShape), tf.tensor4d(c.filter, c.filterShape)],
      tf.tensor4d(c.dy, c.dyShape),
    );
    if (gx === undefined || gw === undefined)
      throw new Error('tf.grads returned fewer gradients than inputs');
    return { gradX: read(gx), gradW: read(gw) };
  });
}

/** Our kernels on wasm, called with the (otherwise unused) `dilations` attribute they accept. */
function wasmConv(c: ConvCase): ConvResult {
  return tidy(() => {
    const x = tf.tensor4d(c.x, c.xShape);
    const dy = tf.tensor4d(c.dy, c.dyShape);
    const attrs = {
      strides: c.strides,
      dilations: c.dilations,
      pad: c.pad,
      dataFormat: c.dataFormat,
    };
    const dx = tf
      .engine()
      .runKernel(
        'Conv2DBackpropInput',
        { dy, filter: tf.tensor4d(c.filter, c.filterShape) },
        { ...attrs, inputShape: c.xShape },
      ) as tf.Tensor;
    const dw = tf
      .engine()
      .runKernel(
        'Conv2DBackpropFilter',
        { x, dy },
        { ...attrs, filterShape: c.filterShape },
      ) as tf.Tensor;
    const result: ConvResult = { dx: read(dx), dw: read(dw) };
    if (hasTfGradient(c)) Object.assign(result, gradsOf(c));
    return result;
  });
}

interface PoolCase {
  name: string;
  xShape: Shape4;
  filterSize: [number, number];
  strides: [number, number];
  pad: Pad;
  x: Float32Array;
  dy: Float32Array;
  dyShape: Shape4;
}

/** Max pools with many ties (small integers, as after a ReLU), overlapping windows and NaN. */
function poolGrid(): PoolCase[] {
  const cases: PoolCase[] = [];
  let i = 0;
  for (const filterSize of [
    [1, 1],
    [2, 2],
    [3, 3],
    [2, 3],
  ] as [number, number][]) {
    for (const s of [1, 2, 3]) {
      for (const pad of ['same', 'valid', 1] as Pad[]) {
        if (typeof pad === 'number' && pad >= Math.min(...filterSize)) continue; // tfjs needs pad < filter
        const xShape: Shape4 = [1 + (i % 3), 4 + (i % 5), 5 + (i % 4), 1 + (i % 5)];
        const strides: [number, number] = i % 4 === 1 ? [s, 1 + (s % 3)] : [s, s];
        const info = tf.backend_util.computePool2DInfo(xShape, filterSize, strides, 1, pad);
        const x = values(size(xShape), 4000 + i, true);
        if (i % 6 === 0) x[i % x.length] = Number.NaN; // cpu skips NaN when it looks for the max
        cases.push({
          name: `#${i} x=[${xShape}] pool=${filterSize} s=${strides} pad=${pad}`,
          xShape,
          filterSize,
          strides,
          pad,
          x,
          dy: values(size(info.outShape), 5000 + i),
          dyShape: info.outShape as Shape4,
        });
        i++;
      }
    }
  }
  return cases;
}

interface PoolResult {
  dx: Float32Array;
  grad: Float32Array;
}

function pool(c: PoolCase): PoolResult {
  return tidy(() => {
    const x = tf.tensor4d(c.x, c.xShape);
    const dy = tf.tensor4d(c.dy, c.dyShape);
    const y = tf.maxPool(x, c.filterSize, c.strides, c.pad as 'same' | 'valid' | number);
    const dx = tf
      .engine()
      .runKernel(
        'MaxPoolGrad',
        { dy, input: x, output: y },
        { filterSize: c.filterSize, strides: c.strides, pad: c.pad },
      ) as tf.Tensor;
    const grad = tf.grad((t: tf.Tensor) =>
      tf.maxPool(t as tf.Tensor4D, c.filterSize, c.strides, c.pad as 'same' | 'valid' | number),
    )(x, dy);
    return { dx: read(dx), grad: read(grad) };
  });
}

interface MatMulCase {
  name: string;
  aShape: number[];
  bShape: number[];
  transposeA: boolean;
  transposeB: boolean;
  a: Float32Array;
  b: Float32Array;
}

/** Every transpose combination, for single matrices (our path) and batches (stock path). */
function matMulGrid(): MatMulCase[] {
  const cases: MatMulCase[] = [];
  let i = 0;
  for (const [batch, m, k, n] of [
    [[], 3, 5, 4],
    [[], 32, 70, 9],
    [[1], 6, 1, 7],
    [[3], 4, 6, 5],
  ] as [number[], number, number, number][]) {
    for (const transposeA of [false, true]) {
      for (const transposeB of [false, true]) {
        const aShape = [...batch, ...(transposeA ? [k, m] : [m, k])];
        const bShape = [...batch, ...(transposeB ? [n, k] : [k, n])];
        cases.push({
          name: `#${i} a=[${aShape}]${transposeA ? 'ᵀ' : ''} b=[${bShape}]${transposeB ? 'ᵀ' : ''}`,
          aShape,
          bShape,
          transposeA,
          transposeB,
          a: values(size(aShape), 8000 + i),
          b: values(size(bShape), 9000 + i),
        });
        i++;
      }
    }
  }
  return cases;
}

/** The product through the kernel, and the gradients of sum(product^2) through tf.grads. */
function matMul(c: MatMulCase): Float32Array[] {
  return tidy(() => {
    const a = tf.tensor(c.a, c.aShape);
    const b = tf.tensor(c.b, c.bShape);
    const product = tf.matMul(a, b, c.transposeA, c.transposeB);
    const grads = tf.grads((x: tf.Tensor, y: tf.Tensor) =>
      tf.sum(tf.square(tf.matMul(x, y, c.transposeA, c.transposeB))),
    )([a, b]);
    return [product, ...grads].map(read);
  });
}

/**
 * A small CNN trained with plain SGD: conv 3x3 'same' + bias -> relu -> maxPool 2 -> dense +
 * bias -> softmax cross-entropy. Returns the loss of every step and the final weights.
 */
function train(steps: number): { losses: number[]; weights: Float32Array[] } {
  const shapes: number[][] = [[3, 3, 2, 4], [4], [4 * 4 * 4, 3], [3]];
  const vars = shapes.map((shape, i) =>
    tf.tidy(() =>
      tf.variable(
        tf.tensor(
          values(size(shape), 6000 + i).map((v) => v * 0.5),
          shape,
        ),
      ),
    ),
  );
  const [w1, b1, w2, b2] = vars as [tf.Variable, tf.Variable, tf.Variable, tf.Variable];
  const xs = tf.tensor4d(values(4 * 9 * 9 * 2, 7000), [4, 9, 9, 2]);
  const labels = tf.tidy(() => tf.oneHot(tf.tensor1d([0, 2, 1, 2], 'int32'), 3));
  const losses: number[] = [];
  for (let step = 0; step < steps; step++) {
    const { value, grads } = tf.variableGrads(() => {
      const h = tf.maxPool(
        tf.relu(tf.add(tf.conv2d(xs, w1 as tf.Tensor4D, 1, 'same'), b1)) as tf.Tensor4D,
        2,
        2,
        'valid',
      );
      const logits = tf.add(tf.matMul(tf.reshape(h, [4, -1]), w2 as tf.Tensor2D), b2);
      return tf.losses.softmaxCrossEntropy(labels, logits) as tf.Scalar;
    }, vars);
    losses.push(value.dataSync()[0] ?? Number.NaN);
    tf.tidy(() => {
      for (const v of vars) {
        const g = grads[v.name];
        if (g === undefined) throw new Error(`no gradient for ${v.name}`);
        v.assign(tf.sub(v, tf.mul(g, 0.5)));
      }
    });
    value.dispose();
    tf.dispose(grads);
  }
  const weights = vars.map((v) => read(v));
  tf.dispose([...vars, xs, labels]);
  return { losses, weights };
}

const convCases = convGrid();
const poolCases = poolGrid();
const matMulCases = matMulGrid();
const cpu: {
  conv: ConvResult[];
  pool: PoolResult[];
  matMul: Float32Array[][];
  training: ReturnType<typeof train>;
} = {
  conv: [],
  pool: [],
  matMul: [],
  training: { losses: [], weights: [] },
};

beforeAll(async () => {
  await tf.setBackend('cpu');
  cpu.conv = convCases.map(cpuConv);
  cpu.pool = poolCases.map(pool);
  cpu.matMul = matMulCases.map(matMul);
  cpu.training = train(3);
  await tf.setBackend('wasm');
});

describe('registerWasmTrainingKernels', () => {
  it('replaces the stock wasm kernels and stays registered across calls (idempotent)', () => {
    expect(tf.getBackend()).toBe('wasm');
    registerWasmTrainingKernels(); // after setBackend('wasm') this time
    registerWasmTrainingKernels();
    for (const config of [
      wasmConv2DBackpropInputConfig,
      wasmConv2DBackpropFilterConfig,
      wasmMaxPoolGradConfig,
      wasmBatchMatMulConfig,
    ]) {
      expect(tf.getKernel(config.kernelName, 'wasm')?.kernelFunc).toBe(config.kernelFunc);
    }
  });
});

describe(`conv2d gradients on wasm match cpu (relative error <= ${REL_TOL})`, () => {
  it(`covers the grid (${convCases.length} cases)`, () => {
    expect(convCases.length).toBeGreaterThan(120);
    const seen = (f: (c: ConvCase) => number | string) => [...new Set(convCases.map(f))];
    expect(seen((c) => c.xShape[0])).toEqual(expect.arrayContaining([1, 2, 3]));
    expect(seen((c) => c.filterShape[2])).toEqual(expect.arrayContaining([1, 2, 3, 4, 5]));
    expect(seen((c) => `${c.filterShape[0]}x${c.filterShape[1]}`)).toEqual(
      expect.arrayContaining(['1x1', '2x2', '3x3', '5x5', '7x7', '3x2']),
    );
    expect(seen((c) => (typeof c.pad === 'string' ? c.pad : 'explicit'))).toEqual(
      expect.arrayContaining(['same', 'valid', 'explicit']),
    );
    expect(seen((c) => c.xShape[1] % 2)).toEqual(expect.arrayContaining([0, 1]));
    expect(convCases.some((c) => c.strides[0] > 1 && c.dilations[0] > 1)).toBe(true);
  });

  it.each(convCases.map((c, i) => [c.name, i] as const))('%s', (_name, i) => {
    const c = convCases[i] as ConvCase;
    const expected = cpu.conv[i] as ConvResult;
    const actual = wasmConv(c);
    expectClose(actual.dx, expected.dx, 'Conv2DBackpropInput');
    expectClose(actual.dw, expected.dw, 'Conv2DBackpropFilter');
    if (expected.gradX !== undefined && expected.gradW !== undefined) {
      expectClose(actual.gradX ?? [], expected.gradX, 'tf.grads(conv2d) w.r.t. x');
      expectClose(actual.gradW ?? [], expected.gradW, 'tf.grads(conv2d) w.r.t. filter');
    }
  });

  it('tf.conv2dTranspose (the public op on Conv2DBackpropInput) matches cpu, int32 inputs included', async () => {
    const run = () =>
      tf.tidy(() => {
        const dy = tf.tensor4d(values(2 * 4 * 5 * 3, 1), [2, 4, 5, 3]);
        const f = tf.tensor4d(values(3 * 3 * 2 * 3, 2), [3, 3, 2, 3]);
        const asFloat = tf.conv2dTranspose(dy, f, [2, 8, 9, 2], 2, 'same');
        const dyInt = tf.tensor4d(values(2 * 4 * 5 * 3, 3, true), [2, 4, 5, 3], 'int32');
        const asInt = tf
          .engine()
          .runKernel(
            'Conv2DBackpropInput',
            { dy: dyInt, filter: f },
            { strides: 2, pad: 'valid', dataFormat: 'NHWC', inputShape: [2, 9, 11, 2] },
          ) as tf.Tensor;
        expect(asInt.dtype).toBe('float32');
        return [read(asFloat), read(asInt)];
      });
    const onWasm = run();
    await tf.setBackend('cpu');
    const onCpu = run();
    await tf.setBackend('wasm');
    expectClose(onWasm[0] ?? [], onCpu[0] ?? [], 'conv2dTranspose');
    expectClose(onWasm[1] ?? [], onCpu[1] ?? [], 'Conv2DBackpropInput, int32 dy');
  });
});

/**
 * A tie sent to the wrong position would be an error of order 1; what remains is the summation
 * order where windows overlap (cpu sums in float64, we in float32).
 */
const POOL_TOL = 1e-6;

describe(`MaxPoolGrad on wasm matches cpu, ties going to the first maximum (relative error <= ${POOL_TOL})`, () => {
  it.each(poolCases.map((c, i) => [c.name, i] as const))('%s', (_name, i) => {
    const actual = pool(poolCases[i] as PoolCase);
    const expected = cpu.pool[i] as PoolResult;
    expect(relError(actual.dx, expected.dx)).toBeLessThanOrEqual(POOL_TOL);
    expect(relError(actual.grad, expected.grad)).toBeLessThanOrEqual(POOL_TOL);
  });
});

describe(`BatchMatMul on wasm matches cpu (relative error <= ${REL_TOL})`, () => {
  it.each(matMulCases.map((c, i) => [c.name, i] as const))('%s', (_name, i) => {
    const actual = matMul(matMulCases[i] as MatMulCase);
    const expected = cpu.matMul[i] ?? [];
    expect(actual).toHaveLength(3);
    for (const [j, what] of ['product', 'd/da', 'd/db'].entries()) {
      expectClose(actual[j] ?? [], expected[j] ?? [], what);
    }
  });
});

describe('training on wasm', () => {
  it('trains a conv -> relu -> maxPool -> dense model to the same losses and weights as cpu', () => {
    const { losses, weights } = train(3);
    expectClose(losses, cpu.training.losses, 'losses');
    expect(losses[2]).toBeLessThan(losses[0] as number); // it did learn something
    for (const [i, w] of weights.entries())
      expectClose(w, cpu.training.weights[i] ?? [], `weight ${i}`);
  });

  it('leaks no tensors and no wasm buffers', () => {
    const c = convCases.find(
      (k) => k.strides[0] > 1 && k.dataFormat === 'NCHW' && k.dilations[0] === 1,
    );
    if (c === undefined) throw new Error('the grid has no strided NCHW case');
    const poolCase = poolCases[4] as PoolCase;
    wasmConv(c); // warm-up: any lazily created state exists before we count
    const before = { ...tf.memory(), ids: tf.backend().numDataIds() };
    wasmConv(c);
    wasmConv(convCases[convCases.length - 1] as ConvCase);
    pool(poolCase);
    matMul(matMulCases[3] as MatMulCase);
    train(1);
    const after = { ...tf.memory(), ids: tf.backend().numDataIds() };
    expect(after.numTensors).toBe(before.numTensors);
    expect(after.numDataBuffers).toBe(before.numDataBuffers);
    expect(after.ids).toBe(before.ids);
  });
});
