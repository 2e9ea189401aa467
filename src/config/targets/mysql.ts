// protocol mysql (MySQL, MariaDB): with credentials, the exit logs in upstream with the injected
// user (native, caching_sha2, ed25519; TLS verified) and audits statements; without, it relays
// raw and the application logs in itself (src/exits/mysql, docs/mysql.md).
import { z } from 'zod';
import { secretSchema } from '../fields.js';
import {
  awsRdsIamSchema,
  dynamicFields,
  keysOf,
  queryAuditFields,
  rdsIamProblems,
  targetMember,
  upstreamTlsSchema,
  userPasswordFields,
  vaultDatabaseFields,
} from './member.js';

export const mysqlTargetSchema = targetMember(
  'mysql',
  'MySQL and MariaDB: credentials injected at the exit, statements audited; without credentials relayed raw (docs/mysql.md).',
  {
    database: z
      .string()
      .min(1)
      .optional()
      .meta({ description: "The schema the exit selects (default: the application's choice)." }),
    tls: upstreamTlsSchema.meta({
      description: 'TLS to the upstream, verified (CA and host name): true, or {ca, servername}.',
    }),
    server_public_key: secretSchema.optional().meta({
      description:
        "The server's RSA public key (PEM), pinned: caching_sha2_password and sha256_password full " +
        'authentication without TLS encrypt the password to it. ciport never asks the server for its key ' +
        "(over plaintext it could be a man in the middle's); without TLS or this key that path is refused.",
    }),
    ...queryAuditFields,
    credentials: keysOf('the credentials of a mysql target', {
      ...userPasswordFields,
      vault_database: vaultDatabaseFields,
      aws_rds_iam: awsRdsIamSchema.optional(),
      dynamic: keysOf('credentials.dynamic of a mysql target', dynamicFields('user'))
        .optional()
        .meta({
          description:
            "A user per session, ciport_<deployment hash>_<session hash>@'%', with the granted roles as " +
            'default roles, dropped at session end (docs/mysql.md). No `owner`: MySQL has no object ' +
            'ownership to reassign.',
        }),
    })
      .optional()
      .meta({
        description:
          'What the exit injects; the job never sees it. Without: a raw relay, the application logging in itself.',
      }),
  },
).superRefine((target, ctx) => {
  for (const p of rdsIamProblems(target)) ctx.addIssue({ code: 'custom', ...p });
});

export type MysqlTarget = z.output<typeof mysqlTargetSchema>;
