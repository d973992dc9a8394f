/**
 * One ring member's replica: the weights, the optimizer state, and at most one staged averaged
 * gradient waiting for the trainer's verdict. A step is applied only on commit, and only when
 * the commit names the step and checksum that were staged, so a member can never apply a step
 * the others did not (the two-phase rule of ring mode: all members or none).
 */
import {
  createOptimizer,
  formatCount,
  type Optimizer,
  type OptimizerKind,
  ShardlineError,
} from '@shardline/core';
import type { ReplicaState } from '../contract.js';
import { float32Checksum } from './payload.js';

/** The optimizer every replica of a job runs (the learning rate comes with each commit). */
export interface ReplicaOptimizerSpec {
  kind: OptimizerKind;
  momentum: number;
  weightDecay: number;
}

/** Options of {@link createReplica}. */
export interface ReplicaOptions {
  /** Number of parameters. */
  size: number;
  optimizer: ReplicaOptimizerSpec;
  /** Who holds it, for messages ("worker w-3"). */
  label?: string;
}

/** A ring member's replica; see the module comment. */
export interface Replica {
  /** Weights version held (steps applied); -1 until a state is loaded. */
  readonly version: number;
  /** The weights at `version`. Changes in place at each commit and load. */
  readonly params: Float32Array;
  /** The step whose average is staged, if any. */
  readonly staged: { step: number; checksum: string } | undefined;
  /** Replaces the whole state (weights, optimizer, version); drops anything staged. */
  load(state: ReplicaState): void;
  /**
   * Stages the averaged gradient of `step` (which must be `version`: a step is computed on the
   * weights it follows). `gradient` is kept, not copied: hand over memory nobody else writes.
   */
  stage(step: number, gradient: Float32Array, checksum: string): void;
  /**
   * Applies the staged gradient with `learningRate`; throws `MISMATCH` when nothing is staged
   * for `step` or its checksum is not `checksum` (the replica would diverge otherwise).
   */
  commit(step: number, learningRate: number, checksum: string): void;
  /** Drops what is staged (an aborted step). */
  discard(): void;
  /** A copy of the weights and optimizer state at `version`. */
  state(): ReplicaState;
  /** CRC-32 of the weights (8 hex digits). */
  checksum(): string;
}

/** Creates an empty {@link Replica}: load a state before staging anything. */
export function createReplica(options: ReplicaOptions): Replica {
  const { size } = options;
  const label = options.label ?? 'this replica';
  const params = new Float32Array(size);
  const optimizer: Optimizer = createOptimizer({
    kind: options.optimizer.kind,
    size,
    momentum: options.optimizer.momentum,
    weightDecay: options.optimizer.weightDecay,
  });
  let version = -1;
  let staged: { step: number; checksum: string; gradient: Float32Array } | undefined;
  return {
    get version() {
      return version;
    },
    params,
    get staged() {
      return staged && { step: staged.step, checksum: staged.checksum };
    },
    load(state) {
      if (state.params.length !== size) {
        throw new ShardlineError(
          'MISMATCH',
          `A replica state with ${formatCount(state.params.length)} weights cannot be loaded into ${label}, which has ${formatCount(size)}.`,
        );
      }
      if (state.optimizer.kind !== optimizer.kind) {
        throw new ShardlineError(
          'MISMATCH',
          `A replica state for optimizer ${state.optimizer.kind} cannot be loaded into ${label}, which runs ${optimizer.kind}.`,
        );
      }
      optimizer.setState(state.optimizer);
      params.set(state.params);
      version = state.version;
      staged = undefined;
    },
    stage(step, gradient, checksum) {
      if (step !== version) {
        throw new ShardlineError(
          'MISMATCH',
          `${label} holds weights version ${version} but was asked to stage step ${step}: a step is computed on the weights of the same version.`,
        );
      }
      if (gradient.length !== size) {
        throw new ShardlineError(
          'MISMATCH',
          `A staged gradient has ${formatCount(gradient.length)} values, expected ${formatCount(size)}.`,
        );
      }
      staged = { step, checksum, gradient };
    },
    commit(step, learningRate, checksum) {
      if (!staged || staged.step !== step || staged.checksum !== checksum) {
        const held = staged ? `step ${staged.step} with checksum ${staged.checksum}` : 'nothing';
        throw new ShardlineError(
          'MISMATCH',
          `${label} was told to commit step ${step} with checksum ${checksum} but holds ${held} staged. ` +
            'The step is not applied, so this replica does not diverge; it leaves the ring and gets the state again.',
        );
      }
      optimizer.apply(params, staged.gradient, learningRate);
      version = step + 1;
      staged = undefined;
    },
    discard() {
      staged = undefined;
    },
    state() {
      return { version, params: params.slice(), optimizer: optimizer.getState() };
    },
    checksum() {
      return float32Checksum(params);
    },
  };
}
