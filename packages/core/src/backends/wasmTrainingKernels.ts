/**
 * Training kernels for the TensorFlow.js wasm backend.
 *
 * Stock `@tensorflow/tfjs-backend-wasm` 4.22.0 has no `Conv2DBackpropFilter` kernel at all
 * (https://github.com/tensorflow/tfjs/issues/8474), so `tf.grad` of any conv2d throws on wasm, and
 * its `Conv2DBackpropInput` is a naive C++ loop about 10x slower than the forward convolution.
 * Both gradients are themselves convolutions, so we express them as calls to the backend's own
 * forward `Conv2D` kernel (XNNPACK, SIMD), glued together with the backend's `Transpose`,
 * `PadV2`, `Reshape`, `Slice` and `StridedSlice` kernels, the way tfjs's own composite wasm
 * kernels are written. Every intermediate is freed with `backend.disposeData`. Where a wasm
 * kernel is slow for what training needs (`Reverse`, `MaxPoolGrad`), we work on the wasm heap
 * directly, as the backend's own `Concat` and `Slice` kernels do; transposed matrix products
 * (`BatchMatMul` with transpose flags, used by every dense layer's gradient) are transposed
 * first so that they reach XNNPACK instead of a scalar loop.
 *
 * @module
 */
import {
  BatchMatMul,
  backend_util,
  Cast,
  Conv2D,
  Conv2DBackpropFilter,
  Conv2DBackpropInput,
  getKernel,
  type KernelBackend,
  type KernelConfig,
  type KernelFunc,
  MaxPoolGrad,
  type NamedAttrMap,
  type NamedTensorInfoMap,
  PadV2,
  Reshape,
  Reverse,
  registerKernel,
  Slice,
  StridedSlice,
  type TensorInfo,
  Transpose,
  unregisterKernel,
} from '@tensorflow/tfjs';
import { ShardlineError } from '../errors.js';

/** The backend name the kernels are registered for. */
const WASM = 'wasm';

type Pad = 'valid' | 'same' | number | backend_util.ExplicitPadding;
type Shape4 = [number, number, number, number];
type DataFormat = 'NHWC' | 'NCHW';
type RoundingMode = 'floor' | 'round' | 'ceil';

/**
 * The part of tfjs-backend-wasm's `BackendWasm` that its own JS-side kernels (Concat, Slice)
 * use to read and write tensors in place on the wasm heap.
 */
interface WasmHeapBackend extends KernelBackend {
  makeOutput(shape: number[], dtype: 'float32'): TensorInfo;
  typedArrayFromHeap(t: TensorInfo): Float32Array | Int32Array | Uint8Array;
}

function heapBackend(backend: KernelBackend): WasmHeapBackend | undefined {
  const b = backend as Partial<WasmHeapBackend>;
  return typeof b.makeOutput === 'function' && typeof b.typedArrayFromHeap === 'function'
    ? (backend as WasmHeapBackend)
    : undefined;
}

function float32View(backend: WasmHeapBackend, t: TensorInfo): Float32Array {
  const view = backend.typedArrayFromHeap(t);
  if (!(view instanceof Float32Array)) {
    throw new ShardlineError(
      'INTERNAL',
      `expected a float32 tensor on the wasm heap, found ${t.dtype}.`,
    );
  }
  return view;
}

/**
 * Runs other wasm kernels and remembers every output, so that the composite kernel can free all
 * of its intermediates in one place (also when something throws half-way).
 */
class KernelScope {
  private readonly temps: TensorInfo[] = [];

  constructor(private readonly backend: KernelBackend) {}

  run(kernelName: string, inputs: NamedTensorInfoMap, attrs: NamedAttrMap = {}): TensorInfo {
    const config = getKernel(kernelName, WASM) as KernelConfig | undefined;
    if (config === undefined) {
      throw new ShardlineError(
        'BACKEND_UNAVAILABLE',
        `expected the wasm backend to provide the ${kernelName} kernel, found none registered. ` +
          "Import '@tensorflow/tfjs-backend-wasm' before training on wasm.",
      );
    }
    const out = config.kernelFunc({ inputs, backend: this.backend, attrs });
    const info = Array.isArray(out) ? out[0] : out;
    if (info === undefined) {
      throw new ShardlineError(
        'INTERNAL',
        `expected ${kernelName} to return a tensor, found none.`,
      );
    }
    this.temps.push(info);
    return info;
  }

  /** Takes ownership of a tensor made outside {@link run}. */
  adopt(t: TensorInfo): TensorInfo {
    this.temps.push(t);
    return t;
  }

  reshape(x: TensorInfo, shape: number[]): TensorInfo {
    return this.run(Reshape, { x }, { shape });
  }

  transpose(x: TensorInfo, perm: number[]): TensorInfo {
    return this.run(Transpose, { x }, { perm });
  }

  /** `x` as float32, which is what the cpu backend's gradient kernels compute and return. */
  float32(x: TensorInfo): TensorInfo {
    return x.dtype === 'float32' ? x : this.run(Cast, { x }, { dtype: 'float32' });
  }

  /** Marks `t` as the result: {@link dispose} will leave it alone. */
  keep(t: TensorInfo): TensorInfo {
    const i = this.temps.indexOf(t);
    if (i >= 0) this.temps.splice(i, 1);
    return t;
  }

  dispose(): void {
    for (const t of this.temps) this.backend.disposeData(t.dataId);
    this.temps.length = 0;
  }
}

function pair(v: number | number[] | undefined, name: string): [number, number] {
  if (v === undefined) return [1, 1];
  if (typeof v === 'number') return [v, v];
  const [a, b] = v;
  if (a === undefined || b === undefined) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `expected ${name} to be a number or a pair of numbers, found [${v.join(', ')}]. Pass e.g. [1, 1].`,
    );
  }
  return [a, b];
}

function shape4(t: TensorInfo, name: string): Shape4 {
  const [a, b, c, d] = t.shape;
  if (
    t.shape.length !== 4 ||
    a === undefined ||
    b === undefined ||
    c === undefined ||
    d === undefined
  ) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `expected ${name} to be a rank-4 tensor, found shape [${t.shape.join(', ')}]. Pass a 4D tensor.`,
    );
  }
  return [a, b, c, d];
}

function checkOutShape(dyShape: Shape4, info: backend_util.Conv2DInfo, kernel: string): void {
  const [h, w, c] =
    info.dataFormat === 'channelsLast'
      ? [dyShape[1], dyShape[2], dyShape[3]]
      : [dyShape[2], dyShape[3], dyShape[1]];
  if (
    dyShape[0] !== info.batchSize ||
    h !== info.outHeight ||
    w !== info.outWidth ||
    c !== info.outChannels
  ) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${kernel}: expected dy of shape [${info.outShape.join(', ')}] for these strides and padding, ` +
        `found [${dyShape.join(', ')}]. Pass the gradient of the forward conv2d's output.`,
    );
  }
}

/** The conv attributes our kernels read; `dilations` is an extension tfjs itself never passes. */
interface ConvGradAttrs {
  strides: [number, number];
  dilations: [number, number];
  pad: Pad;
  dataFormat: DataFormat;
  dimRoundingMode: RoundingMode | undefined;
}

function readAttrs(attrs: NamedAttrMap | undefined): ConvGradAttrs {
  const a = (attrs ?? {}) as Record<string, unknown>;
  const dataFormat = (a.dataFormat ?? 'NHWC') as DataFormat;
  if (dataFormat !== 'NHWC' && dataFormat !== 'NCHW') {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `expected dataFormat NHWC or NCHW, found ${String(dataFormat)}.`,
    );
  }
  return {
    strides: pair(a.strides as number | number[] | undefined, 'strides'),
    dilations: pair(a.dilations as number | number[] | undefined, 'dilations'),
    pad: a.pad as Pad,
    dataFormat,
    dimRoundingMode: a.dimRoundingMode as RoundingMode | undefined,
  };
}

function convInfoOf(
  xShape: Shape4,
  filterShape: Shape4,
  a: ConvGradAttrs,
): backend_util.Conv2DInfo {
  return backend_util.computeConv2DInfo(
    xShape,
    filterShape,
    a.strides,
    a.dilations,
    a.pad,
    a.dimRoundingMode,
    false,
    backend_util.convertConv2DDataFormat(a.dataFormat),
  );
}

/**
 * Runs the wasm forward Conv2D (NHWC) with explicit padding. XNNPACK takes the padding as part of
 * the operator, so no padded copy of the input is made.
 */
function conv(
  scope: KernelScope,
  x: TensorInfo,
  filter: TensorInfo,
  strides: [number, number],
  dilations: [number, number],
  pads: [number, number, number, number],
): TensorInfo {
  const [top, bottom, left, right] = pads;
  return scope.run(
    Conv2D,
    { x, filter },
    {
      strides,
      dilations,
      pad: [
        [0, 0],
        [top, bottom],
        [left, right],
        [0, 0],
      ],
      dataFormat: 'NHWC',
    },
  );
}

/**
 * dW[a, b, ci, co] = sum over n, i, j of xPadded[n, i*s + a*d, j*s + b*d, ci] * dy[n, i, j, co].
 * Read with ci as the batch, n as the channel and (a, b) as the output position, this is a forward
 * convolution of x^T [Cin, H, W, N] with dy^T [Hdy, Wdy, N, Cout] as the filter: the conv's
 * strides s become the filter's dilation and its dilation d becomes the output stride.
 */
function conv2DBackpropFilterImpl(args: {
  inputs: NamedTensorInfoMap;
  backend: unknown;
  attrs?: NamedAttrMap;
}): TensorInfo {
  const backend = args.backend as KernelBackend;
  const { x, dy } = args.inputs;
  if (x === undefined || dy === undefined) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      'Conv2DBackpropFilter: expected inputs x and dy, found one missing.',
    );
  }
  const a = readAttrs(args.attrs);
  const filterShape = (args.attrs as { filterShape?: Shape4 } | undefined)?.filterShape;
  if (filterShape?.length !== 4) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Conv2DBackpropFilter: expected attribute filterShape [kh, kw, inChannels, outChannels], found ${String(filterShape)}.`,
    );
  }
  const xShape = shape4(x, 'x');
  const dyShape = shape4(dy, 'dy');
  const info = convInfoOf(xShape, filterShape, a);
  checkOutShape(dyShape, info, 'Conv2DBackpropFilter');
  const { inHeight: h, inWidth: w, inChannels: cin, outChannels: cout } = info;
  const { outHeight: ho, outWidth: wo, filterHeight: kh, filterWidth: kw } = info;
  const [sh, sw] = [info.strideHeight, info.strideWidth];
  const [dh, dw] = [info.dilationHeight, info.dilationWidth];
  const { top, left } = info.padInfo;

  const scope = new KernelScope(backend);
  try {
    const channelsLast = info.dataFormat === 'channelsLast';
    // [Cin, H, W, N]: channels become the batch, the batch becomes the reduced channel axis.
    const xT = scope.transpose(scope.float32(x), channelsLast ? [3, 1, 2, 0] : [1, 2, 3, 0]);
    // [Hdy, Wdy, N, Cout]: the output gradient is the "filter".
    const dyT = scope.transpose(scope.float32(dy), channelsLast ? [1, 2, 0, 3] : [2, 3, 0, 1]);
    // Rows of the padded input that the forward pass read: (kh-1)*d + (Hdy-1)*s + 1, starting at
    // -top. Rows beyond that (when a stride skipped the tail) only produce extra outputs that we
    // slice away, so the bottom padding is clamped at zero instead of cropping the input.
    const bottom = Math.max(0, (kh - 1) * dh + (ho - 1) * sh + 1 - top - h);
    const right = Math.max(0, (kw - 1) * dw + (wo - 1) * sw + 1 - left - w);
    let dW: TensorInfo;
    if ((dh > 1 && sh > 1) || (dw > 1 && sw > 1)) {
      // tfjs's Conv2D contract forbids strides > 1 together with dilations > 1, so compute the
      // dense (stride 1) result over the dilated tap grid and pick every d-th tap.
      const dense = conv(scope, xT, dyT, [1, 1], [sh, sw], [top, bottom, left, right]);
      dW = scope.run(
        StridedSlice,
        { x: dense },
        {
          begin: [0, 0, 0, 0],
          end: [cin, (kh - 1) * dh + 1, (kw - 1) * dw + 1, cout],
          strides: [1, dh, dw, 1],
          beginMask: 0,
          endMask: 0,
          ellipsisMask: 0,
          newAxisMask: 0,
          shrinkAxisMask: 0,
        },
      );
    } else {
      dW = conv(scope, xT, dyT, [dh, dw], [sh, sw], [top, bottom, left, right]);
    }
    if (dW.shape[1] !== kh || dW.shape[2] !== kw) {
      dW = scope.run(Slice, { x: dW }, { begin: [0, 0, 0, 0], size: [cin, kh, kw, cout] });
    }
    return scope.keep(scope.transpose(dW, [1, 2, 0, 3]));
  } finally {
    scope.dispose();
  }
}

/**
 * Reverses the order of the kh*kw taps of a [kh, kw, a, b] filter (a 180-degree rotation). The
 * wasm Reverse kernel walks element by element (18 ms for a 3x3x256x256 filter); the taps are
 * contiguous blocks, so on the wasm heap this is kh*kw block copies (well under 1 ms).
 */
function reverseTaps(scope: KernelScope, backend: KernelBackend, filter: TensorInfo): TensorInfo {
  const heap = heapBackend(backend);
  const [kh, kw, a, b] = shape4(filter, 'filter');
  if (heap === undefined) return scope.run(Reverse, { x: filter }, { dims: [0, 1] });
  const out = scope.adopt(heap.makeOutput([kh, kw, a, b], 'float32'));
  // Views are taken after makeOutput: growing the wasm memory detaches older ones.
  const src = float32View(heap, filter);
  const dst = float32View(heap, out);
  const block = a * b;
  const taps = kh * kw;
  for (let t = 0; t < taps; t++) {
    const from = (taps - 1 - t) * block;
    dst.set(src.subarray(from, from + block), t * block);
  }
  return out;
}

/**
 * The stock wasm kernels we replaced. BatchMatMul delegates to its stock kernel; MaxPoolGrad falls
 * back to it on a backend without heap access (not BackendWasm: never so with tfjs-backend-wasm 4.x).
 */
const stockKernels = new Map<string, KernelConfig>();

/**
 * dx is the "full" correlation of dy, zero-upsampled by the stride, with the filter rotated by
 * 180 degrees and its channel axes swapped; the padding is k_eff - 1 - pad on each side (and
 * whatever else makes the output exactly the requested input shape).
 */
function conv2DBackpropInputImpl(args: {
  inputs: NamedTensorInfoMap;
  backend: unknown;
  attrs?: NamedAttrMap;
}): TensorInfo {
  const backend = args.backend as KernelBackend;
  const { dy, filter } = args.inputs;
  if (dy === undefined || filter === undefined) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      'Conv2DBackpropInput: expected inputs dy and filter, found one missing.',
    );
  }
  const a = readAttrs(args.attrs);
  const inputShape = (args.attrs as { inputShape?: Shape4 } | undefined)?.inputShape;
  if (inputShape?.length !== 4) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Conv2DBackpropInput: expected attribute inputShape [batch, height, width, channels], found ${String(inputShape)}.`,
    );
  }
  const filterShape = shape4(filter, 'filter');
  const dyShape = shape4(dy, 'dy');
  const info = convInfoOf(inputShape, filterShape, a);
  checkOutShape(dyShape, info, 'Conv2DBackpropInput');
  const { batchSize: n, inHeight: h, inWidth: w, inChannels: cin, outChannels: cout } = info;
  const { outHeight: ho, outWidth: wo } = info;
  const [sh, sw] = [info.strideHeight, info.strideWidth];
  const [dh, dw] = [info.dilationHeight, info.dilationWidth];
  const keh = info.effectiveFilterHeight;
  const kew = info.effectiveFilterWidth;
  const { top, left } = info.padInfo;

  const scope = new KernelScope(backend);
  try {
    const channelsLast = info.dataFormat === 'channelsLast';
    const dyF = scope.float32(dy);
    let g = channelsLast ? dyF : scope.transpose(dyF, [0, 2, 3, 1]);
    // Zero-upsample by the stride: [N,Ho,1,Wo,1,C] padded to [N,Ho,sh,Wo,sw,C] puts each value
    // at the top-left of an sh x sw cell. The sh-1 trailing zero rows are accounted for below.
    if (sh > 1 || sw > 1) {
      const r = scope.reshape(g, [n, ho, 1, wo, 1, cout]);
      const p = scope.run(
        PadV2,
        { x: r },
        {
          paddings: [
            [0, 0],
            [0, 0],
            [0, sh - 1],
            [0, 0],
            [0, sw - 1],
            [0, 0],
          ],
          constantValue: 0,
        },
      );
      g = scope.reshape(p, [n, ho * sh, wo * sw, cout]);
    }
    const hu = ho * sh;
    const wu = wo * sw;
    // W[kh,kw,Cin,Cout] -> [kh,kw,Cout,Cin], rotated 180 degrees.
    const wT = reverseTaps(scope, backend, scope.transpose(scope.float32(filter), [0, 1, 3, 2]));
    // Padding of the full correlation; negative values are crops, done on the (stride 1) output.
    const padTop = keh - 1 - top;
    const padBottom = h - hu + top;
    const padLeft = kew - 1 - left;
    const padRight = w - wu + left;
    let dx = conv(
      scope,
      g,
      wT,
      [1, 1],
      [dh, dw],
      [Math.max(0, padTop), Math.max(0, padBottom), Math.max(0, padLeft), Math.max(0, padRight)],
    );
    if (dx.shape[1] !== h || dx.shape[2] !== w) {
      dx = scope.run(
        Slice,
        { x: dx },
        { begin: [0, Math.max(0, -padTop), Math.max(0, -padLeft), 0], size: [n, h, w, cin] },
      );
    }
    if (!channelsLast) dx = scope.transpose(dx, [0, 3, 1, 2]);
    return scope.keep(dx);
  } finally {
    scope.dispose();
  }
}

function runStock(
  kernelName: string,
  args: { inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap },
): TensorInfo {
  const stock = stockKernels.get(kernelName);
  if (stock === undefined) {
    throw new ShardlineError(
      'BACKEND_UNAVAILABLE',
      `${kernelName}: expected the stock wasm kernel to delegate to, found none. Import ` +
        "'@tensorflow/tfjs-backend-wasm' before calling registerWasmTrainingKernels().",
    );
  }
  const out = stock.kernelFunc({
    inputs: args.inputs,
    backend: args.backend as object,
    ...(args.attrs === undefined ? {} : { attrs: args.attrs }),
  });
  const info = Array.isArray(out) ? out[0] : out;
  if (info === undefined)
    throw new ShardlineError('INTERNAL', `stock ${kernelName} returned no tensor.`);
  return info;
}

/**
 * dx of a max pool: each window's gradient goes to its first maximum in row-major window order,
 * ignoring NaN and padding, summed where windows overlap, exactly as the cpu backend does. The
 * stock wasm MaxPoolGrad spends 36 ms on the seed CNN's first pool at batch 32; this single pass
 * over the windows on the wasm heap takes about a third of that.
 */
function maxPoolGradImpl(args: {
  inputs: NamedTensorInfoMap;
  backend: unknown;
  attrs?: NamedAttrMap;
}): TensorInfo {
  const backend = args.backend as KernelBackend;
  const { dy, input } = args.inputs;
  if (dy === undefined || input === undefined) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      'MaxPoolGrad: expected inputs dy and input, found one missing.',
    );
  }
  const heap = heapBackend(backend);
  if (heap === undefined) return runStock(MaxPoolGrad, args);
  const a = (args.attrs ?? {}) as Record<string, unknown>;
  const info = backend_util.computePool2DInfo(
    shape4(input, 'input'),
    a.filterSize as number | [number, number],
    a.strides as number | [number, number],
    1,
    a.pad as Pad,
    a.dimRoundingMode as RoundingMode | undefined,
  );
  checkOutShape(shape4(dy, 'dy'), { ...info, outChannels: info.inChannels }, 'MaxPoolGrad');

  const scope = new KernelScope(backend);
  try {
    const out = scope.adopt(heap.makeOutput([...input.shape], 'float32'));
    const xF = scope.float32(input);
    const gF = scope.float32(dy);
    // Views are taken after the last allocation: growing the wasm memory detaches older ones.
    maxPoolBackprop(float32View(heap, xF), float32View(heap, gF), float32View(heap, out), info);
    return scope.keep(out);
  } finally {
    scope.dispose();
  }
}

/** The loop of {@link maxPoolGradImpl}: dx += dy at each window's first maximum. */
function maxPoolBackprop(
  x: Float32Array,
  g: Float32Array,
  dx: Float32Array,
  info: backend_util.Conv2DInfo,
): void {
  const {
    batchSize: n,
    inHeight: h,
    inWidth: w,
    inChannels: c,
    outHeight: oh,
    outWidth: ow,
  } = info;
  const {
    strideHeight: sh,
    strideWidth: sw,
    effectiveFilterHeight: fh,
    effectiveFilterWidth: fw,
  } = info;
  const { top, left } = info.padInfo;
  dx.fill(0);
  let o = 0;
  for (let b = 0; b < n; b++) {
    for (let yr = 0; yr < oh; yr++) {
      const r0 = yr * sh - top;
      const rMin = Math.max(0, r0);
      const rMax = Math.min(h, r0 + fh);
      for (let yc = 0; yc < ow; yc++, o += c) {
        const c0 = yc * sw - left;
        const cMin = Math.max(0, c0);
        const cMax = Math.min(w, c0 + fw);
        for (let d = 0; d < c; d++) {
          let maxValue = Number.NEGATIVE_INFINITY;
          let maxIndex = -1;
          for (let r = rMin; r < rMax; r++) {
            let i = ((b * h + r) * w + cMin) * c + d;
            for (let col = cMin; col < cMax; col++, i += c) {
              const v = x[i] as number;
              if (v > maxValue) {
                maxValue = v;
                maxIndex = i;
              }
            }
          }
          if (maxIndex >= 0) dx[maxIndex] = (dx[maxIndex] as number) + (g[o + d] as number);
        }
      }
    }
  }
}

/**
 * A matrix product whose operands are single matrices (no batch) runs on XNNPACK only without
 * transpose flags; with `transposeA` or `transposeB`, which every MatMul gradient uses, the stock
 * kernel takes a scalar path 10x slower (the seed CNN's first dense layer: 18 ms vs 1.6 ms).
 * Transposing the operand with the Transpose kernel first is cheaper. Batched products have no
 * fast path either way and go straight to the stock kernel.
 */
function batchMatMulImpl(args: {
  inputs: NamedTensorInfoMap;
  backend: unknown;
  attrs?: NamedAttrMap;
}): TensorInfo {
  const backend = args.backend as KernelBackend;
  const { a, b } = args.inputs;
  const { transposeA, transposeB } = (args.attrs ?? {}) as {
    transposeA?: boolean;
    transposeB?: boolean;
  };
  const single = (t: TensorInfo) => t.shape.slice(0, -2).every((dim) => dim === 1);
  if (
    a === undefined ||
    b === undefined ||
    (!transposeA && !transposeB) ||
    !single(a) ||
    !single(b)
  ) {
    return runStock(BatchMatMul, args);
  }
  const swapLast = (t: TensorInfo) => {
    const perm = t.shape.map((_, i) => i);
    const r = perm.length;
    [perm[r - 2], perm[r - 1]] = [r - 1, r - 2];
    return perm;
  };
  const scope = new KernelScope(backend);
  try {
    const a2 = transposeA === true ? scope.transpose(a, swapLast(a)) : a;
    const b2 = transposeB === true ? scope.transpose(b, swapLast(b)) : b;
    return runStock(BatchMatMul, {
      inputs: { a: a2, b: b2 },
      backend,
      attrs: { ...args.attrs, transposeA: false, transposeB: false },
    });
  } finally {
    scope.dispose();
  }
}

/**
 * `Conv2DBackpropFilter` for wasm, which has none upstream (tensorflow/tfjs#8474): one XNNPACK
 * forward convolution. Registered by {@link registerWasmTrainingKernels}; exported for tests and
 * for callers that manage kernel registration themselves. Accepts an optional `dilations` attr.
 */
export const wasmConv2DBackpropFilterConfig: KernelConfig = {
  kernelName: Conv2DBackpropFilter,
  backendName: WASM,
  kernelFunc: conv2DBackpropFilterImpl as KernelFunc,
};

/**
 * `Conv2DBackpropInput` for wasm, replacing the stock scalar loop with one XNNPACK forward
 * convolution (about 10x faster on the seed CNN). Accepts an optional `dilations` attr.
 */
export const wasmConv2DBackpropInputConfig: KernelConfig = {
  kernelName: Conv2DBackpropInput,
  backendName: WASM,
  kernelFunc: conv2DBackpropInputImpl as KernelFunc,
};

/** `MaxPoolGrad` for wasm: one pass over the windows, about 2-3x faster than the stock kernel. */
export const wasmMaxPoolGradConfig: KernelConfig = {
  kernelName: MaxPoolGrad,
  backendName: WASM,
  kernelFunc: maxPoolGradImpl as KernelFunc,
  // The stock kernel's cwrap'd function is bound in its setupFunc, which the engine only calls
  // for kernels registered when the backend initialises; forward ours so the fallback works when
  // we replaced the stock kernel before setBackend('wasm').
  setupFunc: (backend) => stockKernels.get(MaxPoolGrad)?.setupFunc?.(backend),
};

/**
 * `BatchMatMul` for wasm that sends transposed single-matrix products (every MatMul gradient) to
 * XNNPACK; everything else goes to the stock kernel.
 */
export const wasmBatchMatMulConfig: KernelConfig = {
  kernelName: BatchMatMul,
  backendName: WASM,
  kernelFunc: batchMatMulImpl as KernelFunc,
  // As for MaxPoolGrad: the stock kernel we delegate to needs its setup to have run.
  setupFunc: (backend) => stockKernels.get(BatchMatMul)?.setupFunc?.(backend),
};

/** Registers `config` for wasm unless it already is, keeping whatever it replaces. */
function replaceKernel(config: KernelConfig): void {
  const current = getKernel(config.kernelName, WASM) as KernelConfig | undefined;
  if (current?.kernelFunc === config.kernelFunc) return;
  if (current !== undefined) {
    stockKernels.set(config.kernelName, current);
    unregisterKernel(config.kernelName, WASM);
  }
  registerKernel(config);
}

/**
 * Registers Shardline's training kernels for the tfjs `wasm` backend: a `Conv2DBackpropFilter`
 * (missing upstream, tensorflow/tfjs#8474), and `Conv2DBackpropInput`, `MaxPoolGrad` and
 * `BatchMatMul` kernels that replace stock ones that are slow for what training needs. The convolution gradients run on the backend's XNNPACK forward
 * convolution, about 10x faster than the stock input gradient. Idempotent, and safe to call
 * before or after `tf.setBackend('wasm')`, but after `@tensorflow/tfjs-backend-wasm` is imported.
 *
 * @example
 * ```ts
 * import * as tf from '@tensorflow/tfjs';
 * import '@tensorflow/tfjs-backend-wasm';
 * registerWasmTrainingKernels();
 * await tf.setBackend('wasm');
 * ```
 */
export function registerWasmTrainingKernels(): void {
  if (getKernel(Conv2D, WASM) === undefined) {
    // Registering first would let the wasm package's own (later) registration silently replace
    // our kernels with the stock ones.
    throw new ShardlineError(
      'BACKEND_UNAVAILABLE',
      'expected the tfjs wasm backend to be loaded before registering its training kernels, found ' +
        "no wasm Conv2D kernel. Import '@tensorflow/tfjs-backend-wasm' first.",
    );
  }
  replaceKernel(wasmConv2DBackpropInputConfig);
  replaceKernel(wasmConv2DBackpropFilterConfig);
  replaceKernel(wasmMaxPoolGradConfig);
  replaceKernel(wasmBatchMatMulConfig);
}
