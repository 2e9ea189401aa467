// protocol postgres: the exit logs in upstream with the injected credential (SCRAM, MD5,
// cleartext; TLS by `sslmode`), or with a role it makes per session, and audits statements
// (src/exits/postgres, docs/postgres.md, docs/credentials.md).
import { z } from 'zod';
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

export const postgresTargetSchema = targetMember(
  'postgres',
  'PostgreSQL: credentials injected at the exit, statements audited (docs/postgres.md).',
  {
    database: z
      .string()
      .min(1)
      .optional()
      .meta({ description: "The database the exit connects to (default: the application's choice)." }),
    tls: upstreamTlsSchema.meta({
      description: 'TLS to the upstream: true, or {ca, servername}; how strictly it is checked: `sslmode`.',
    }),
    sslmode: z
      .enum(['disable', 'require', 'verify-ca', 'verify-full'])
      .optional()
      .meta({
        description:
          'TLS to the upstream. Default: verify-full when `tls` is set, disable otherwise. ' +
          '`tls.ca` / `tls.servername` give the CA bundle and the name checked.',
      }),
    ...queryAuditFields,
    credentials: keysOf('the credentials of a postgres target', {
      ...userPasswordFields,
      vault_database: vaultDatabaseFields,
      aws_rds_iam: awsRdsIamSchema.optional(),
      dynamic: keysOf('credentials.dynamic of a postgres target', {
        ...dynamicFields('role'),
        owner: z.string().min(1).meta({ description: 'Role that receives what a session role owned.' }),
      })
        .optional()
        .meta({
          description:
            'A LOGIN role per session (ciport_<id>, VALID UNTIL the session expiry, IN ROLE the granted ' +
            'roles), dropped at session end; objects it owns go to `owner`.',
        }),
    })
      .optional()
      .meta({
        description:
          'What the exit injects; the job never sees it. Without: this process does not exit to the target (an agent does).',
      }),
  },
).superRefine((target, ctx) => {
  for (const p of rdsIamProblems(target)) ctx.addIssue({ code: 'custom', ...p });
});

export type PostgresTarget = z.output<typeof postgresTargetSchema>;
