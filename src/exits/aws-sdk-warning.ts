// The AWS SDK for JavaScript prints a multi-line NodeVersionSupportWarning on Node < 22 at its
// first client: SDK releases after January 2027 will need Node 22. ciport pins the SDK to a
// release line that supports Node 20.19 (package.json, docs/aws.md "Node versions"), so the
// warning says nothing about this install, and on a gateway's or agent's stderr it interleaves
// with the JSON log. The long-running processes (gateway, agent) switch it off through the SDK's
// own variable unless the operator set it; a job's environment never gets it (the commands that
// run jobs do not call this).
export function quietAwsSdkNodeWarning(env: NodeJS.ProcessEnv = process.env): void {
  env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
}
