// Imported first by the CLI, before anything that needs Node.js 24.
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  process.stderr.write(
    `remora needs Node.js 24 or newer; this is ${process.version}.\n` +
      `Run it through the workspace (npm run remora -- …, or pnpm remora …), which brings Node.js 24.\n`,
  );
  process.exit(1);
}
export {};
