/**
 * Can this worker reach its coordinator, with its TLS settings and token? Asks the standard
 * gRPC health service (grpc.health.v1, open to every caller, as orchestrators' probes use it)
 * whether the coordinator service is SERVING, then calls GetStatus, which sits behind the
 * token, so a wrong token shows here instead of at the first Join.
 */
import {
  type ChannelCredentials,
  type Client,
  type ClientOptions,
  Metadata,
  makeGenericClientConstructor,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import { type Logger, toShardlineError } from '@shardline/core';
import {
  CHANNEL_OPTIONS,
  CoordinatorClient,
  CoordinatorServiceService,
  fromGrpcStatus,
  type GetStatusResponse,
  JobState,
} from '@shardline/protocol';
import { service as healthService } from 'grpc-health-check';
import {
  explainSecurityFailure,
  resolveWorkerChannel,
  type WorkerChannel,
  type WorkerSecurityFlags,
} from './security.js';

/**
 * The name the coordinator registers its health under: its gRPC service's full name, taken
 * from the generated definition (`/shardline.v1.CoordinatorService/GetStatus`).
 */
export const COORDINATOR_HEALTH_SERVICE = CoordinatorServiceService.getStatus.path.split('/')[1]!;

/** What {@link checkCoordinator} found. */
export interface CoordinatorCheck {
  address: string;
  tls: boolean;
  clientCertificate: boolean;
  token: boolean;
  /** Whether the health service answered. */
  reachable: boolean;
  /** The health service's answer for the coordinator service (SERVING, NOT_SERVING, ...). */
  health?: string;
  /** Whether GetStatus accepted this worker's token (or needed none). */
  authorized?: boolean;
  /** The job's state and progress, from GetStatus. */
  job?: { id: string; state: string; epoch: number; step: string; workers: number; model?: string };
  /** Whether a worker could join now: reachable, SERVING and authorized. */
  ok: boolean;
  /** What went wrong and what to do. */
  error?: string;
  elapsedMs: number;
}

/** Options of {@link checkCoordinator}. */
export interface CoordinatorCheckOptions {
  address: string;
  security: WorkerSecurityFlags;
  /** Deadline for each call. */
  timeoutMs: number;
  logger: Logger;
}

type HealthClient = Client & {
  check(
    request: { service: string },
    metadata: Metadata,
    options: { deadline: Date },
    callback: (error: ServiceError | null, response?: { status: string }) => void,
  ): void;
};

const HealthClientConstructor = makeGenericClientConstructor(
  healthService,
  'grpc.health.v1.Health',
) as unknown as new (
  address: string,
  credentials: ChannelCredentials,
  options: Partial<ClientOptions>,
) => HealthClient;

function explain(
  error: unknown,
  channel: WorkerChannel,
  address: string,
  timeoutMs: number,
): string {
  const e = explainSecurityFailure(
    typeof (error as { code?: unknown }).code === 'number'
      ? fromGrpcStatus(error as ServiceError)
      : toShardlineError(error),
    channel,
    address,
  );
  if ((error as ServiceError).code === status.DEADLINE_EXCEEDED) {
    return `No answer from the coordinator at ${address} within ${timeoutMs / 1000} s: expected its gRPC port to answer. Check the address, that the coordinator runs, and that no firewall drops the traffic.`;
  }
  // grpc-js appends an empty "Resolution note: " to connection errors; it says nothing here.
  const text = e.message.replace(/\.?\s*Resolution note:\s*\.?/g, '.').replace(/\s*\n\s*/g, ' ');
  return e.code === 'NETWORK' ? `Cannot reach the coordinator at ${address}: ${text}` : text;
}

function notServing(address: string, answer: string, state?: string): string {
  return `The coordinator at ${address} is up but its service is ${answer}${state ? ` (job ${state})` : ''}: expected SERVING, which it is while a job runs. Start a new job, or point this worker at the running one.`;
}

/**
 * Checks the coordinator at `address` as this worker would reach it. Never throws: problems,
 * including bad TLS files, come back in `error`.
 *
 * @example
 * ```ts
 * const check = await checkCoordinator({ address: '10.0.0.5:7070', security: {}, timeoutMs: 5000, logger });
 * if (!check.ok) console.error(check.error);
 * ```
 */
export async function checkCoordinator(
  options: CoordinatorCheckOptions,
): Promise<CoordinatorCheck> {
  const started = Date.now();
  const { address, timeoutMs } = options;
  const base = {
    address,
    tls:
      options.security.tls === true ||
      options.security.tlsCa !== undefined ||
      options.security.tlsCert !== undefined,
    clientCertificate: options.security.tlsCert !== undefined,
    token: options.security.token !== undefined,
  };
  let channel: WorkerChannel;
  try {
    channel = resolveWorkerChannel(options.security, address, options.logger);
  } catch (error) {
    return {
      ...base,
      reachable: false,
      ok: false,
      error: toShardlineError(error).message,
      elapsedMs: Date.now() - started,
    };
  }
  const clientOptions = { ...CHANNEL_OPTIONS, ...channel.options };
  const health = new HealthClientConstructor(address, channel.credentials, clientOptions);
  const coordinator = new CoordinatorClient(address, channel.credentials, clientOptions);
  const deadline = () => new Date(Date.now() + timeoutMs);
  try {
    let answer: string;
    try {
      answer = await new Promise<string>((resolve, reject) => {
        health.check(
          { service: COORDINATOR_HEALTH_SERVICE },
          new Metadata(),
          { deadline: deadline() },
          (error, response) => (error ? reject(error) : resolve(response?.status ?? 'UNKNOWN')),
        );
      });
    } catch (error) {
      if ((error as ServiceError).code === status.NOT_FOUND) {
        // The health service runs but knows no coordinator service: some other gRPC server.
        return {
          ...base,
          reachable: true,
          health: 'SERVICE_UNKNOWN',
          ok: false,
          error: `${address} answers gRPC health checks but serves no ${COORDINATOR_HEALTH_SERVICE}: expected a Shardline coordinator. Check the address and port.`,
          elapsedMs: Date.now() - started,
        };
      }
      if ((error as ServiceError).code === status.UNIMPLEMENTED) {
        return {
          ...base,
          reachable: true,
          ok: false,
          error: `${address} speaks gRPC but has no health service: expected a Shardline coordinator (it serves grpc.health.v1). Check the address and port.`,
          elapsedMs: Date.now() - started,
        };
      }
      return {
        ...base,
        reachable: false,
        ok: false,
        error: explain(error, channel, address, timeoutMs),
        elapsedMs: Date.now() - started,
      };
    }
    let statusResponse: GetStatusResponse;
    try {
      statusResponse = await new Promise<GetStatusResponse>((resolve, reject) => {
        coordinator.getStatus({}, new Metadata(), { deadline: deadline() }, (error, response) =>
          error ? reject(error) : resolve(response),
        );
      });
    } catch (error) {
      const refused = (error as ServiceError).code === status.UNAUTHENTICATED;
      return {
        ...base,
        reachable: true,
        health: answer,
        ...(refused ? { authorized: false } : {}),
        ok: false,
        error:
          answer !== 'SERVING' && !refused
            ? notServing(address, answer)
            : explain(error, channel, address, timeoutMs),
        elapsedMs: Date.now() - started,
      };
    }
    const job = {
      id: statusResponse.job?.jobId ?? '',
      state: JobState[statusResponse.state] ?? String(statusResponse.state),
      epoch: statusResponse.epoch,
      step: statusResponse.step.toString(),
      workers: statusResponse.workers.length,
      ...(statusResponse.job?.modelName ? { model: statusResponse.job.modelName } : {}),
    };
    const serving = answer === 'SERVING';
    return {
      ...base,
      reachable: true,
      health: answer,
      authorized: true,
      job,
      ok: serving,
      ...(serving ? {} : { error: notServing(address, answer, job.state) }),
      elapsedMs: Date.now() - started,
    };
  } finally {
    health.close();
    coordinator.close();
  }
}
