// protocol tcp: the exit dials the address and relays raw bytes; nothing injected, nothing
// parsed, so nothing else to configure (src/exits/tcp). TLS, if any, is the application's own.
import type { z } from 'zod';
import { targetMember } from './member.js';

export const tcpTargetSchema = targetMember(
  'tcp',
  "Raw TCP: bytes relayed as they are; the application's own protocol, login and TLS end to end.",
  {},
);

export type TcpTarget = z.output<typeof tcpTargetSchema>;
