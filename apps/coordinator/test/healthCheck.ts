import {
  credentials,
  makeClientConstructor,
  type ServiceDefinition,
  type ServiceError,
} from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';

/**
 * Asks grpc.health.v1.Health/Check about `service` in plaintext, as a Kubernetes gRPC probe
 * does; rejects with the call's ServiceError (UNAVAILABLE, NOT_FOUND...).
 */
export function checkHealth(address: string, service: string): Promise<{ status: string }> {
  const Health = makeClientConstructor(
    healthService as unknown as ServiceDefinition,
    'grpc.health.v1.Health',
  );
  const client = new Health(address, credentials.createInsecure()) as unknown as {
    check(
      request: { service: string },
      options: { deadline: Date },
      callback: (error: ServiceError | null, response: { status: string }) => void,
    ): void;
    close(): void;
  };
  return new Promise<{ status: string }>((resolve, reject) =>
    client.check({ service }, { deadline: new Date(Date.now() + 5000) }, (error, response) =>
      error ? reject(error) : resolve(response),
    ),
  ).finally(() => client.close());
}
