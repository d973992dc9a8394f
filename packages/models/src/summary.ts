/**
 * Keras-style model summaries: {@link summary} gives structured rows (for tests, logs and
 * dashboards), {@link formatSummary} the familiar text table. Unlike tfjs's `model.summary()`,
 * neither prints anything.
 */
import type * as tf from '@tensorflow/tfjs';

/** The output shape of a layer; `null` is the batch dimension (Keras's `None`). */
export type OutputShape = (number | null)[];

/** One row of a {@link ModelSummary}: one layer. */
export interface LayerSummary {
  /** The layer's name (`conv2d_1`). */
  readonly name: string;
  /** The layer's class (`Conv2D`, `MaxPooling2D`, `Dense`). */
  readonly className: string;
  /** Output shape; a list of shapes for layers with several outputs. */
  readonly outputShape: OutputShape | OutputShape[];
  /** Parameters of the layer, trainable or not. */
  readonly params: number;
}

/** A model summary: one row per layer, plus parameter totals. */
export interface ModelSummary {
  /** The model's name (`seed-cnn`). */
  readonly name: string;
  readonly layers: readonly LayerSummary[];
  /** All parameters; weights shared between layers are counted once. */
  readonly totalParams: number;
  readonly trainableParams: number;
  readonly nonTrainableParams: number;
}

function countWeights(weights: readonly tf.LayerVariable[]): number {
  // Shared weights appear once per layer that uses them; Keras counts them once.
  const seen = new Set<string>();
  let total = 0;
  for (const weight of weights) {
    if (seen.has(weight.id.toString())) continue;
    seen.add(weight.id.toString());
    total += weight.shape.reduce<number>((a, b) => a * (b ?? 1), 1);
  }
  return total;
}

function shapeOf(layer: tf.layers.Layer): OutputShape | OutputShape[] {
  const shape = layer.outputShape as unknown;
  const copy = (s: readonly (number | null)[]): OutputShape => [...s];
  if (Array.isArray(shape) && shape.length > 0 && Array.isArray(shape[0])) {
    return (shape as (number | null)[][]).map(copy);
  }
  return copy(shape as (number | null)[]);
}

/**
 * Summarises a model: name, class, output shape and parameter count of each layer, and the
 * totals. The model must be built (it is when its first layer has an input shape, as every
 * registry model's does).
 *
 * @example
 * ```ts
 * const s = summary(createModel('seed-cnn', { seed: 1 }));
 * s.totalParams; // 1413834
 * s.layers[0];   // { name: 'conv2d_1', className: 'Conv2D', outputShape: [null, 28, 28, 64], params: 3200 }
 * ```
 */
export function summary(model: tf.LayersModel): ModelSummary {
  const layers = model.layers.map(
    (layer): LayerSummary => ({
      name: layer.name,
      className: layer.getClassName(),
      outputShape: shapeOf(layer),
      params: layer.countParams(),
    }),
  );
  const trainableParams = countWeights(model.trainableWeights);
  const nonTrainableParams = countWeights(model.nonTrainableWeights);
  return {
    name: model.name,
    layers,
    totalParams: trainableParams + nonTrainableParams,
    trainableParams,
    nonTrainableParams,
  };
}

/** Formats a shape as Keras does: `(None, 28, 28, 64)`. */
export function formatShape(shape: OutputShape | OutputShape[]): string {
  const one = (s: OutputShape) =>
    `(${s.map((d) => (d === null ? 'None' : String(d))).join(', ')}${s.length === 1 ? ',' : ''})`;
  if (shape.length > 0 && Array.isArray(shape[0]))
    return `[${(shape as OutputShape[]).map(one).join(', ')}]`;
  return one(shape as OutputShape);
}

const count = (n: number): string => n.toLocaleString('en-US');

/**
 * The Keras text table of a model or of a {@link summary}, for logs and terminals. Columns widen
 * to fit long names instead of cutting them.
 *
 * @example
 * ```ts
 * console.log(formatSummary(createModel('mlp')));
 * // Model: "mlp"
 * // _________________________________________________________________
 * //  Layer (type)                Output Shape              Param #
 * // =================================================================
 * //  flatten_1 (Flatten)         (None, 784)               0
 * // ...
 * // Total params: 266,610
 * ```
 */
export function formatSummary(modelOrSummary: tf.LayersModel | ModelSummary): string {
  const s: ModelSummary =
    'totalParams' in modelOrSummary ? modelOrSummary : summary(modelOrSummary);
  const rows = s.layers.map((layer) => [
    ` ${layer.name} (${layer.className})`,
    formatShape(layer.outputShape),
    count(layer.params),
  ]);
  const header = [' Layer (type)', 'Output Shape', 'Param #'];
  // Keras's default widths (65 characters: 29 + 26 + 10), widened when a cell needs more.
  const widths = [29, 26, 10].map((min, col) =>
    Math.max(min, ...[header, ...rows].map((row) => (row[col] ?? '').length + (col < 2 ? 1 : 0))),
  );
  const width = widths.reduce((a, b) => a + b, 0);
  const line = (cells: string[]) =>
    cells
      .map((cell, col) => (col < cells.length - 1 ? cell.padEnd(widths[col]!) : cell))
      .join('')
      .trimEnd();
  return [
    `Model: "${s.name}"`,
    '_'.repeat(width),
    line(header),
    '='.repeat(width),
    ...rows.map(line),
    '='.repeat(width),
    `Total params: ${count(s.totalParams)}`,
    `Trainable params: ${count(s.trainableParams)}`,
    `Non-trainable params: ${count(s.nonTrainableParams)}`,
    '_'.repeat(width),
  ].join('\n');
}
