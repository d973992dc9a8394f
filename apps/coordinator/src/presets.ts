/**
 * Named training recipes for `train --preset <name>`. A preset fills the settings it names
 * unless a flag, an environment variable or the config file sets them, so
 * `--preset five-epochs --epochs 8` is the recipe with three more epochs. `--print-config`
 * shows `preset <name>` as the source of each value it gave.
 */
import type { SettingsPreset } from '@shardline/core/settings';

/**
 * The recipes by name. `five-epochs` beats the seed CNN's 30 Keras epochs (0.9054) in five: the
 * recorded run (docs/runs/seed-cnn-five-epochs) reached 0.9183 with 2 local workers. Twice the
 * tutorial's batch at twice its rate halves the steps per epoch; a short linear warm-up keeps the
 * first steps from throwing off the fresh layers while Adam's moments settle; cosine decay
 * anneals to zero by the last step, where most of the gain comes; shifts and flips stand in for
 * the epochs the model does not get; and a small L2 penalty on every weight.
 */
export const TRAIN_PRESETS = {
  'five-epochs': {
    description:
      'beats the seed CNN in 5 epochs: batch 64, Adam at peak 0.002 with a 0.2-epoch warm-up and cosine decay, --augment, weight decay 5e-5',
    values: {
      epochs: 5,
      batchSize: 64,
      learningRate: 0.002,
      schedule: 'cosine',
      warmupEpochs: 0.2,
      augment: true,
      weightDecay: 0.00005,
    },
  },
} as const satisfies Record<string, SettingsPreset>;

/** The names `--preset` takes. */
export const TRAIN_PRESET_NAMES = Object.keys(TRAIN_PRESETS) as [keyof typeof TRAIN_PRESETS];
