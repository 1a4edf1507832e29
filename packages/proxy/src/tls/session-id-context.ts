import { createHash } from 'node:crypto';

/**
 * The session id context of a server-side secure context that verifies clients (OpenSSL's
 * `SSL_CTX_set_session_id_context`). OpenSSL refuses to resume a session on such a context
 * without one — the handshake fails with an internal-error alert, so a client that caches
 * sessions (every pool) could open only its first connection. A session resumes only into a
 * context with the same id, so the id is derived from what verification depends on (the mode
 * and the trusted roots): a session verified under one trust cannot be resumed under another.
 */
export function sessionIdContext(mode: string, trustedRootsPem: string): string {
  // OpenSSL takes at most 32 bytes (SSL_MAX_SID_CTX_LENGTH): 128 bits of SHA-256, in hex.
  return createHash('sha256').update(mode).update('\0').update(trustedRootsPem).digest('hex').slice(0, 32);
}
