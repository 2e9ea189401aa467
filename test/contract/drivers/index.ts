// The protocols of the contract suite, one driver each (a new protocol: one more entry).
import type { Driver } from '../driver.js';
import { httpDriver } from './http.js';
import { mysqlDriver } from './mysql.js';
import { postgresDriver } from './postgres.js';
import { redisDriver } from './redis.js';
import { tcpDriver } from './tcp.js';

export const DRIVERS: readonly Driver[] = [tcpDriver, postgresDriver, httpDriver, redisDriver, mysqlDriver];
