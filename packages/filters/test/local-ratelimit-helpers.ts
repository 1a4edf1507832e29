// The request the local rate limit and fault filters' unit tests send: one route `r` on
// `svc.test`, from 10.0.0.1 unless `remoteIp` says otherwise.
import { FakeRequest, type ReqInit } from '@remora/filters/testing';

export class RouteRequest extends FakeRequest {
  constructor(init: ReqInit = {}) {
    const ip = init.remoteIp ?? '10.0.0.1';
    super({ authority: 'svc.test', routeName: 'r', sourceIp: ip, ...init, remoteIp: ip });
  }
}
