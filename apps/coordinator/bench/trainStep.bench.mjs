// The in-process training step, exactly as `train --in-process` runs it: a real Fashion-MNIST
// batch, computeGradients (forward + backward on the chosen backend), the Adam update over the
// flat master weights, and the weight write-back into the model. Reports images/s per model.
//
// A plain node script, not a test: timings need a quiet machine. `pnpm bench` builds first.
// Flags: --backend wasm|cpu|auto (default wasm), --batch N (32), --steps N (timed steps, 8),
//        --models a,b (default seed-cnn,fast-cnn), --profile (per-kernel time of one step).
import {
  computeGradients,
  createOptimizer,
  describeLayout,
  readWeights,
  selectBackend,
  writeWeights,
} from '@shardline/core';
import { epochOrder, loadDataset, makeBatch } from '@shardline/datasets';
import { summarizeDurations } from '@shardline/metrics';
import { createModel } from '@shardline/models';
import * as tf from '@tensorflow/tfjs';

const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : fallback;
};
const backendName = flag('backend', 'wasm');
const batchSize = Number(flag('batch', '32'));
const steps = Number(flag('steps', '8'));
const models = flag('models', 'seed-cnn,fast-cnn').split(',');

const { backend } = await selectBackend(backendName);
const { train } = await loadDataset('fashion-mnist', {
  limitTrain: batchSize * (steps + 3),
  limitTest: 1,
  download: false,
});
const order = epochOrder(train.count, 1, 0);
console.log(
  `training step, ${backend} backend, batch ${batchSize}, ${new Date().toISOString()}, node ${process.version}`,
);

for (const name of models) {
  const model = createModel(name, { seed: 1 });
  const layout = describeLayout(model);
  const params = readWeights(model, layout);
  const optimizer = createOptimizer({ kind: 'adam', size: layout.size });
  const step = (i) => {
    const batch = makeBatch(train, order.subarray(i * batchSize, (i + 1) * batchSize));
    const { gradient } = computeGradients(model, batch, layout);
    optimizer.apply(params, gradient, 1e-3);
    writeWeights(model, params, layout);
  };
  step(0); // warm-up: XNNPACK operators are created on first use
  step(1);
  const tensorsBefore = tf.memory().numTensors;
  const seconds = [];
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    step(i + 2);
    seconds.push((performance.now() - t0) / 1000);
  }
  const d = summarizeDurations(seconds);
  console.log(
    `${name.padEnd(9)} ${layout.size.toLocaleString('en-US').padStart(10)} params: median step ${(d.p50 * 1000).toFixed(0)} ms ` +
      `(p95 ${(d.p95 * 1000).toFixed(0)} ms) = ${(batchSize / d.p50).toFixed(1)} images/s; ` +
      `tensors leaked: ${tf.memory().numTensors - tensorsBefore}`,
  );
  if (args.includes('--profile')) {
    const info = await tf.profile(() => step(2));
    const byKernel = new Map();
    for (const k of info.kernels) {
      const ms = await k.kernelTimeMs;
      const row = byKernel.get(k.name) ?? { ms: 0, calls: 0 };
      row.ms += typeof ms === 'number' ? ms : 0;
      row.calls += 1;
      byKernel.set(k.name, row);
    }
    for (const [kernel, r] of [...byKernel.entries()].sort((a, b) => b[1].ms - a[1].ms)) {
      if (r.ms >= 1)
        console.log(
          `    ${kernel.padEnd(24)}${r.ms.toFixed(1).padStart(8)} ms ${String(r.calls).padStart(5)} calls`,
        );
    }
  }
  model.dispose();
}
