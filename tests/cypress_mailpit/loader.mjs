// Node module hooks that load cypress-mailpit's published files as Cypress's
// bundler does: its dist/ is ES module syntax in a package without
// "type": "module", and it imports "./src/MailpitCommands" without the
// ".js" that Node's ES module resolution wants. The files run unchanged.
const PACKAGE_FILES = '/node_modules/cypress-mailpit/dist/';

export async function resolve(specifier, context, nextResolve) {
  try {
    return await nextResolve(specifier, context);
  } catch (error) {
    const fromPackage = (context.parentURL || '').includes(PACKAGE_FILES);
    if (error.code === 'ERR_MODULE_NOT_FOUND' && fromPackage && specifier.startsWith('.')) {
      return nextResolve(`${specifier}.js`, context);
    }
    throw error;
  }
}

export async function load(url, context, nextLoad) {
  if (url.includes(PACKAGE_FILES) && url.endsWith('.js')) {
    return nextLoad(url, { ...context, format: 'module' });
  }
  return nextLoad(url, context);
}
