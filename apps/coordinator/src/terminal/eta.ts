/**
 * Time left, for the progress bar: the epoch's ETA from this epoch's mean step time (what Keras
 * shows), and the whole run's from the mean step time so far times the steps left, plus each
 * evaluation still ahead.
 *
 * Step times are measured between progress reports, so the first step of each epoch (it carries
 * the weights' first transfer, or follows the evaluation) is left out of the means. Evaluations
 * are timed from an epoch's last step to its end (test pass and checkpoint); before the first one
 * has been timed, an evaluation is guessed at a third of a training step per sample (a forward
 * pass without the backward one) over the test set: rough, and replaced by the measured time
 * after the first epoch.
 */
import type { StepProgress } from '@shardline/training';

/** What the run looks like, from the `started` event: for guessing the first evaluation. */
export interface RunShape {
  trainSamples: number;
  testSamples: number;
  batchSize: number;
}

/** Estimates of time left, in seconds; `undefined` until a step has been timed. */
export interface Eta {
  epoch: number | undefined;
  run: number | undefined;
}

/** Times the run's steps and evaluations; see the module comment. */
export interface EtaClock {
  /** Records a progress report at `nowMs` and returns the estimates after it. */
  step(progress: StepProgress, nowMs: number): Eta;
  /** Records an epoch's end (its evaluation is over) at `nowMs`. */
  epochEnded(nowMs: number): void;
  /**
   * The epoch that just ended: its seconds from the (estimated) start of its first step to its
   * end, and its mean step seconds; `undefined` when no step of it was reported.
   */
  lastEpoch(): { seconds: number; stepSeconds: number | undefined } | undefined;
}

/** Creates an {@link EtaClock}; `shape` refines the first evaluation's guess when known. */
export function createEtaClock(shape?: RunShape): EtaClock {
  // Completed epochs' timed steps, and the current epoch's first report and last one.
  let pastSteps = 0;
  let pastSeconds = 0;
  let epoch:
    | { number: number; firstMs: number; firstStep: number; lastMs: number; lastStep: number }
    | undefined;
  const evaluations: number[] = [];
  let ended: { seconds: number; stepSeconds: number | undefined } | undefined;

  const epochMean = () =>
    epoch && epoch.lastStep > epoch.firstStep
      ? (epoch.lastMs - epoch.firstMs) / 1000 / (epoch.lastStep - epoch.firstStep)
      : undefined;
  const runMean = () => {
    const steps = pastSteps + (epoch ? epoch.lastStep - epoch.firstStep : 0);
    const seconds = pastSeconds + (epoch ? (epoch.lastMs - epoch.firstMs) / 1000 : 0);
    return steps > 0 ? seconds / steps : undefined;
  };
  const evaluationSeconds = (stepSeconds: number) => {
    if (evaluations.length > 0) return evaluations.reduce((a, b) => a + b, 0) / evaluations.length;
    if (!shape || shape.batchSize <= 0) return 0;
    return (stepSeconds * shape.testSamples) / shape.batchSize / 3;
  };

  return {
    step(p, nowMs) {
      if (!epoch || epoch.number !== p.epoch) {
        epoch = {
          number: p.epoch,
          firstMs: nowMs,
          firstStep: p.stepInEpoch,
          lastMs: nowMs,
          lastStep: p.stepInEpoch,
        };
      } else {
        epoch.lastMs = nowMs;
        epoch.lastStep = p.stepInEpoch;
      }
      const mean = runMean();
      const forEpoch = epochMean() ?? mean;
      const stepsLeftInEpoch = Math.max(0, p.stepsPerEpoch - p.stepInEpoch);
      const laterEpochs = Math.max(0, p.epochs - p.epoch);
      return {
        epoch: forEpoch === undefined ? undefined : forEpoch * stepsLeftInEpoch,
        run:
          mean === undefined
            ? undefined
            : mean * (stepsLeftInEpoch + laterEpochs * p.stepsPerEpoch) +
              evaluationSeconds(mean) * (laterEpochs + 1),
      };
    },
    epochEnded(nowMs) {
      if (!epoch) {
        ended = undefined;
        return;
      }
      const steps = epoch.lastStep - epoch.firstStep;
      const stepSeconds = epochMean();
      evaluations.push((nowMs - epoch.lastMs) / 1000);
      // The first reported step's own time was not observed: count it at the mean.
      ended = {
        seconds: (nowMs - epoch.firstMs) / 1000 + (stepSeconds ?? 0),
        stepSeconds,
      };
      pastSteps += steps;
      pastSeconds += (epoch.lastMs - epoch.firstMs) / 1000;
      epoch = undefined;
    },
    lastEpoch: () => ended,
  };
}
