// Protocol `http`: header injection at the exit (see exit.ts) and the injection spec of a target.

export {
  createHttpExit,
  type HttpExit,
  type HttpExitHooks,
  type HttpExitOptions,
  type HttpExitTarget,
  type HttpRequestEvent,
  type HttpUpstreamTls,
} from './exit.js';
export {
  checkHttpInjection,
  HTTP_INJECTION_KINDS,
  type HttpCredentialsInput,
  type HttpInjection,
  type HttpInjectionKind,
  httpInjectionFrom,
  injectedHeader,
  replacedHeaders,
} from './injection.js';
export { httpListenerUrl } from './url.js';
