// Benchmarks Shardline's wasm training kernels (src/backends/wasmTrainingKernels.ts) on the seed
// CNN's convolution shapes, then times a whole seed-CNN training step on wasm.
//
// A plain node script, not a vitest test: timings need a quiet process. Build first:
//   cd packages/core && npx tsc -p tsconfig.build.json && node bench/wasmKernels.bench.mjs
// Flags: --batch N (default 32), --steps N (timed training steps, default 5),
//        --profile (print where the training step spends its time, per kernel).
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { registerWasmTrainingKernels } from '../dist/backends/wasmTrainingKernels.js';

const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? Number(args[i + 1]) : fallback;
};
const batch = flag('batch', 32);
const steps = flag('steps', 5);
const profile = args.includes('--profile');

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
tf.env().set('IS_TEST', false);
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

/** The seed CNN (design.md), Keras-style, 1,413,834 parameters. */
function seedCnn() {
  const conv = (filters, kernelSize, extra = {}) =>
    tf.layers.conv2d({ filters, kernelSize, padding: 'same', activation: 'relu', ...extra });
  const pool = () => tf.layers.maxPooling2d({ poolSize: 2 });
  return tf.sequential({
    layers: [
      conv(64, 7, { inputShape: [28, 28, 1] }),
      pool(),
      conv(128, 3),
      conv(128, 3),
      pool(),
      conv(256, 3),
      conv(256, 3),
      pool(),
      tf.layers.flatten(),
      tf.layers.dense({ units: 128, activation: 'relu' }),
      tf.layers.dense({ units: 64, activation: 'relu' }),
      tf.layers.dense({ units: 10, activation: 'softmax' }),
    ],
  });
}

const model = seedCnn();
console.log(`seed CNN: ${model.countParams().toLocaleString('en-US')} parameters`);
const xs = tf.randomUniform([batch, 28, 28, 1]);
const labels = tf.tensor1d(
  Array.from({ length: batch }, (_, i) => i % 10),
  'int32',
);
const variables = model.trainableWeights.map((w) => w.read());

/** One training step as training does it: loss, gradients, gradients read back to JS. */
function step() {
  const { value, grads } = tf.variableGrads(() => {
    const probs = model.apply(xs, { training: true });
    const logp = tf.log(tf.clipByValue(probs, 1e-7, 1 - 1e-7));
    return tf.neg(tf.mean(tf.sum(tf.mul(tf.oneHot(labels, 10), logp), -1)));
  }, variables);
  for (const v of variables) grads[v.name].dataSync();
  const loss = value.dataSync()[0];
  value.dispose();
  tf.dispose(grads);
  return loss;
}

step(); // warm-up: creates every XNNPACK operator once
step();
const before = tf.memory().numTensors;
const stepTimes = [];
for (let i = 0; i < steps; i++) {
  const start = performance.now();
  step();
  stepTimes.push(performance.now() - start);
}
const stepMs = median(stepTimes);
console.log(
  `training step, batch ${batch}: ${stepTimes.map((t) => t.toFixed(0)).join(' ')} ms; median ${stepMs.toFixed(0)} ms ` +
    `= ${((batch * 1000) / stepMs).toFixed(1)} images/s; tensors leaked per step: ${(tf.memory().numTensors - before) / steps}`,
);

if (profile) {
  const info = await tf.profile(() => {
    step();
  });
  const byKernel = new Map();
  for (const k of info.kernels) {
    const ms = await k.kernelTimeMs;
    const row = byKernel.get(k.name) ?? { ms: 0, calls: 0 };
    row.ms += typeof ms === 'number' ? ms : 0;
    row.calls += 1;
    byKernel.set(k.name, row);
  }
  const rows = [...byKernel.entries()].sort((a, b) => b[1].ms - a[1].ms);
  const total = rows.reduce((s, [, r]) => s + r.ms, 0);
  console.log(`per-kernel time of one profiled step (sum ${total.toFixed(0)} ms):`);
  for (const [name, r] of rows) {
    if (r.ms >= 0.5)
      console.log(
        `  ${name.padEnd(24)}${r.ms.toFixed(1).padStart(8)} ms  ${String(r.calls).padStart(4)} calls`,
      );
  }
}
tf.dispose([xs, labels]);
