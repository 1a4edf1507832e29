/**
 * Envoy's listener TLS counters (`listener.<address>.ssl.*`), kept per listener and shown on
 * the admin `/stats`. `session_reused` tells whether clients resume sessions.
 */
export class TlsStats {
  /** Handshakes completed and accepted. */
  handshake = 0;
  /** Accepted handshakes that resumed an earlier session. */
  sessionReused = 0;
  /** Handshakes that failed, or connections lost during one. */
  connectionError = 0;
  /** Accepted connections whose client sent no certificate. */
  noCertificate = 0;
  /** Connections refused because a required client certificate was not sent. */
  failVerifyNoCert = 0;
  /** Client certificates refused by verification against the trusted roots. */
  failVerifyError = 0;
  /** Client certificates refused by a MUTUAL server's `subjectAltNames`. */
  failVerifySan = 0;
}
