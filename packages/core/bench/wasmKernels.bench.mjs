// Benchmarks Shardline's wasm training kernels (src/backends/wasmTrainingKernels.ts) on the seed
// CNN's convolution shapes against the forward conv and the stock backprop-input kernel.
//
// A plain node script, not a vitest test: timings need a quiet process. Build first:
//   cd packages/core && npx tsc -p tsconfig.build.json && node bench/wasmKernels.bench.mjs
// Flags: --batch N (default 32).
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { registerWasmTrainingKernels } from '../dist/backends/wasmTrainingKernels.js';

const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? Number(args[i + 1]) : fallback;
};
const batch = flag('batch', 32);

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

/** Median wall time of `fn` (which returns a tensor), including reading the result back. */
function timeMs(fn, reps = 5) {
  const times = [];
  for (let i = 0; i < reps + 1; i++) {
    const start = performance.now();
    const out = fn();
    out.dataSync();
    const ms = performance.now() - start;
    out.dispose();
    if (i > 0) times.push(ms); // the first run creates and packs the XNNPACK operator
  }
  return median(times);
}

// The seed CNN's convolutions at the given batch: [x shape, filter shape].
const convShapes = [
  [
    [batch, 28, 28, 1],
    [7, 7, 1, 64],
  ],
  [
    [batch, 14, 14, 64],
    [3, 3, 64, 128],
  ],
  [
    [batch, 14, 14, 128],
    [3, 3, 128, 128],
  ],
  [
    [batch, 7, 7, 128],
    [3, 3, 128, 256],
  ],
  [
    [batch, 7, 7, 256],
    [3, 3, 256, 256],
  ],
];

await tf.setBackend('wasm');
const stockInput = tf.getKernel('Conv2DBackpropInput', 'wasm');
registerWasmTrainingKernels();

console.log(
  `wasm kernels, batch ${batch}, SIMD ${tf.env().getBool('WASM_HAS_SIMD_SUPPORT')}, ` +
    `threads ${tf.env().getBool('WASM_HAS_MULTITHREAD_SUPPORT')}, ${new Date().toISOString()}`,
);
console.log(
  'x shape          filter          forward  stockBpInput  newBpInput  newBpFilter  (ms, median)',
);
for (const [xShape, fShape] of convShapes) {
  const x = tf.randomNormal(xShape);
  const f = tf.randomNormal(fShape);
  const dy = tf.conv2d(x, f, 1, 'same');
  const attrs = { strides: 1, pad: 'same', dataFormat: 'NHWC' };
  const fwd = timeMs(() => tf.conv2d(x, f, 1, 'same'));
  // The stock kernel is slow; a few runs are plenty.
  const stock = timeMs(
    () =>
      tf.engine().makeTensorFromTensorInfo(
        stockInput.kernelFunc({
          inputs: { dy, filter: f },
          backend: tf.backend(),
          attrs: { ...attrs, inputShape: xShape },
        }),
      ),
    2,
  );
  const bpIn = timeMs(() => tf.conv2dTranspose(dy, f, xShape, 1, 'same'));
  const bpFilter = timeMs(() =>
    tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { ...attrs, filterShape: fShape }),
  );
  const fmt = (v) => v.toFixed(1).padStart(10);
  console.log(
    `${JSON.stringify(xShape).padEnd(17)}${JSON.stringify(fShape).padEnd(14)}${fmt(fwd)}${fmt(stock)}  ${fmt(bpIn)}  ${fmt(bpFilter)}`,
  );
  tf.dispose([x, f, dy]);
}

// The whole training step (forward, these kernels, optimizer, weight write-back) is measured by
// apps/coordinator/bench/trainStep.bench.mjs with the real seed-cnn from @shardline/models.
