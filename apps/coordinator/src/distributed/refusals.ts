/**
 * Why the coordinator refused a call or a message, as a short label: what
 * `shardline_rejected_messages_total{reason}` counts (dashboard/metrics.ts). The places that
 * refuse call an `onRefusal` hook with one of these rather than leave it to be parsed out of
 * their log lines.
 *
 * Not counted: TLS handshakes that fail (a client without the right certificate never reaches a
 * handler, and grpc-js reports nothing to the application) and calls refused by grpc-js itself
 * (a message over the size limit).
 */
import type { RejectionReason } from './remoteWorker.js';

/** Every refusal label, in the order /metrics lists them. */
export const REFUSAL_REASONS = [
  // Any call without the job's token, or with another one (security.ts, requireToken).
  'no_token',
  'wrong_token',
  // Join: another protocol version, fields over JOIN_LIMITS, a missing plugin, a worker that
  // cannot be a ring member, too many joins not attached yet, --max-workers reached.
  'protocol_version',
  'join_limits',
  'plugins',
  'ring_member',
  'pending_joins',
  'max_workers',
  // Train's first message: an unknown (or forgotten) worker id, or not an attach.
  'unknown_worker',
  'bad_attach',
  // Messages on an attached worker's stream: the three report checks of summary.json's
  // `rejected_reports`, and anything else it should not have sent (a gradient no step asked for,
  // a ring message in a star job, a malformed tensor...).
  'non_finite_gradient',
  'invalid_report',
  'invalid_evaluation',
  'unexpected_message',
] as const;

/** A refusal label; see {@link REFUSAL_REASONS}. */
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

/** Receives each refusal, as it happens. */
export type RefusalHook = (reason: RefusalReason) => void;

/** The refusal label of each rejected report (remoteWorker.ts's {@link RejectionReason}). */
export const REJECTION_REFUSALS: Readonly<Record<RejectionReason, RefusalReason>> = {
  'non-finite gradient': 'non_finite_gradient',
  report: 'invalid_report',
  evaluation: 'invalid_evaluation',
};
