// `ciport ssh-ca --config F`: the gateway's SSH user CA public key, one OpenSSH line, for the
// target hosts' TrustedUserCAKeys (docs/ssh.md). Reads `ssh.ca_key`, else `<data_dir>/ssh_user_ca`,
// generating it there when the gateway has not yet (so hosts can be set up before its first start).
import { resolve } from 'node:path';
// The hosts' AuthorizedPrincipalsFile lists target-scoped principals, `ciport:<target>:<login>`.
import type { Command } from 'commander';
import { loadGatewayConfig } from '../../config/load.js';
import { loadSshCa } from '../../credentials/ssh-ca.js';
import { action, type CliContext, examples } from '../command.js';

export function registerSshCa(program: Command, ctx: CliContext): void {
  examples(
    program
      .command('ssh-ca')
      .description("print the gateway's SSH user CA public key (for the hosts' TrustedUserCAKeys)")
      .requiredOption('--config <file>', 'gateway configuration'),
    [
      'ciport ssh-ca --config /etc/ciport/gateway.yaml > /etc/ssh/ciport_user_ca.pub',
      'ciport ssh-ca --config gateway.yaml | ssh root@web1 "cat > /etc/ssh/ciport_user_ca.pub"',
    ],
  )
    .addHelpText(
      'after',
      '\nCertificates carry target-scoped principals, ciport:<target>:<login>: each host lists them per\n' +
        'user in its AuthorizedPrincipalsFile, e.g. for login deploy on target web1:\n' +
        '  echo ciport:web1:deploy > /etc/ssh/auth_principals/deploy   (docs/ssh.md, "Setting up a host")\n',
    )
    .action(
      action(ctx, (opts: { config: string }) => {
        // Only the CA key's secret is read: the others (admin tokens, targets') need not be at hand.
        const cfg = loadGatewayConfig(opts.config, { resolveSecrets: false, env: ctx.io.env });
        cfg.ssh?.ca_key?.resolve(ctx.io.env, `${opts.config}: ssh.ca_key`);
        const ca = loadSshCa(cfg);
        // A relative data_dir is relative to the working directory: run from elsewhere, this makes
        // a CA the gateway never uses, and hosts trusting it refuse every job. Say it was made.
        if (ca.generated) {
          ctx.io.stderr.write(
            `ciport: generated a new SSH user CA in ${resolve(ca.origin)}: the gateway signs with it only if ` +
              'its data_dir is this one (same working directory), else set ssh.ca_key\n',
          );
        }
        ctx.io.stdout.write(`${ca.publicLine}\n`);
        return 0;
      }),
    );
}
