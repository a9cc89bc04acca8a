// Type-checks ../clarion.json against @grafana/schema, the TypeScript types Grafana publishes for
// its dashboard JSON (schema "x", the classic model) and for each core panel's options and field
// config. The dashboard and each panel's options are written out as typed object literals, so
// TypeScript reports an unknown key, a missing required one, or a value outside its enum.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dashboard = JSON.parse(readFileSync(join(here, '..', 'clarion.json'), 'utf8'));

// Panel type -> the @grafana/schema module of its options (the export names the file).
const panelTypes = {
  timeseries: ['TimeSeries', 'timeseries', 'TimeSeriesPanelCfg'],
  stat: ['Stat', 'stat', 'StatPanelCfg'],
  heatmap: ['Heatmap', 'heatmap', 'HeatmapPanelCfg'],
  'state-timeline': ['StateTimeline', 'statetimeline', 'StateTimelinePanelCfg'],
};

const lines = [
  "import type { Dashboard } from '@grafana/schema/dist/esm/raw/dashboard/x/Dashboard_types.gen';",
  ...Object.values(panelTypes).map(
    ([alias, dir, cfg]) =>
      `import type * as ${alias} from '@grafana/schema/dist/esm/raw/composable/${dir}/panelcfg/x/${cfg}_types.gen';`,
  ),
  // The types use TypeScript enums, the JSON their string values: compare with the values.
  'type Loose<T> = T extends string ? `${T}` : T extends (infer U)[] ? Loose<U>[] : ' +
    'T extends object ? { [K in keyof T]: Loose<T[K]> } : T;',
  `export const dashboard: Loose<Dashboard> = ${JSON.stringify(dashboard, null, 1)};`,
];
for (const panel of dashboard.panels) {
  if (panel.type === 'row') continue;
  const known = panelTypes[panel.type];
  if (!known) {
    console.error(`panel ${panel.id} (${panel.title}): no types for panel type ${panel.type}`);
    process.exit(1);
  }
  const [alias] = known;
  lines.push(`export const options_${panel.id}: Loose<${alias}.Options> = ${JSON.stringify(panel.options)};`);
  const custom = panel.fieldConfig?.defaults?.custom;
  if (custom !== undefined) {
    lines.push(`export const custom_${panel.id}: Loose<${alias}.FieldConfig> = ${JSON.stringify(custom)};`);
  }
}
mkdirSync(join(here, 'generated'), { recursive: true });
writeFileSync(join(here, 'generated', 'dashboard.ts'), lines.join('\n') + '\n');

const tsc = createRequire(import.meta.url).resolve('typescript/lib/tsc.js');
const run = spawnSync(process.execPath, [tsc, '-p', join(here, 'tsconfig.json')], { stdio: 'inherit' });
if (run.status === 0) {
  const version = JSON.parse(readFileSync(join(here, 'node_modules', '@grafana', 'schema', 'package.json'), 'utf8')).version;
  console.log(`clarion.json matches @grafana/schema ${version}: ${dashboard.panels.length} panels`);
}
process.exit(run.status ?? 1);
