// The console's pure helpers: links to the CI platform only from plain http(s) URLs of the job
// URL's origin, never from a project path with dot segments; escaping of every interpolation.
import { describe, expect, it } from 'vitest';
import { principalLinks, principalView } from '../../src/web/format.js';
import { html, httpUrl, lines, trusted } from '../../src/web/html.js';

const gitlab = {
  issuer: 'gitlab',
  kind: 'gitlab',
  project: { id: '7', path: 'acme/ledger' },
  ref: { name: 'feature/x', type: 'branch', protected: false },
  pipeline_id: '1519139981',
  job_id: '8222997048',
  job_url: 'https://gitlab.example.com/acme/ledger/-/jobs/8222997048',
};

describe('principal links', () => {
  it('GitLab: project, ref, pipeline and job on the job URL’s origin', () => {
    expect(principalLinks(principalView(gitlab))).toEqual({
      job: 'https://gitlab.example.com/acme/ledger/-/jobs/8222997048',
      project: 'https://gitlab.example.com/acme/ledger',
      ref: 'https://gitlab.example.com/acme/ledger/-/tree/feature%2Fx',
      pipeline: 'https://gitlab.example.com/acme/ledger/-/pipelines/1519139981',
    });
  });

  it('GitHub: the run as the pipeline', () => {
    const links = principalLinks(
      principalView({
        issuer: 'github',
        project: 'acme/ledger',
        ref: 'main',
        pipeline: '42',
        job_url: 'https://github.com/acme/ledger/actions/runs/42/attempts/1',
      }),
    );
    expect(links).toMatchObject({
      project: 'https://github.com/acme/ledger',
      pipeline: 'https://github.com/acme/ledger/actions/runs/42',
      ref: 'https://github.com/acme/ledger/tree/main',
    });
  });

  it('no link from a job URL that is not http(s), nor from a project path that could climb', () => {
    for (const job_url of [
      'javascript:alert(1)',
      'data:text/html,<b>',
      '//evil.example/x',
      'ftp://x/y',
      'not a url',
    ]) {
      expect(principalLinks(principalView({ ...gitlab, job_url })), job_url).toEqual({});
    }
    for (const path of [
      '../evil',
      'acme/../../evil',
      'acme/./x',
      '/abs',
      'a b',
      'acme//x',
      '%2e%2e/x',
      'acme/x?y',
    ]) {
      const links = principalLinks(principalView({ ...gitlab, project: { id: '1', path } }));
      expect(links.project, path).toBeUndefined();
      expect(links.ref, path).toBeUndefined();
    }
    expect(principalLinks(principalView({ ...gitlab, pipeline_id: '1/../../x' })).pipeline).toBeUndefined();
  });

  it('httpUrl accepts http(s) only', () => {
    expect(httpUrl('https://x.example/a')).toBe('https://x.example/a');
    expect(httpUrl('JAVASCRIPT:alert(1)')).toBeUndefined();
    expect(httpUrl(42)).toBeUndefined();
  });
});

describe('html', () => {
  it('escapes every interpolated value, arrays included, and keeps trusted markup', () => {
    const evil = `"><script>alert('x')</script>&`;
    expect(
      html`<a title="${evil}">${[evil, 1, null, undefined, false]}</a>${trusted('<b>ok</b>')}`.text,
    ).toBe(
      '<a title="&quot;&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;">&quot;&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;1</a><b>ok</b>',
    );
    // control characters from claims are shown, not passed through
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the test looks for exactly these characters
    expect(html`${'a\u001b[31mb\u202e'}`.text).not.toMatch(/[\u001b\u202e]/);
    // text for a <pre> keeps its lines, each escaped
    expect(lines('a <b>\n  "c"').text).toBe('a &lt;b&gt;\n  &quot;c&quot;');
  });
});
