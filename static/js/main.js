// model-manager browser UI: ES modules, no build step, no dependencies.
//
// Data flow: every download the page knows lives in the store (store.js). The
// websocket (events.js) and a few REST reads (reads.js) keep it current and call
// `changed()`; the lists (downloads.js) then place one row per id, creating, moving
// or patching rows in place. Progress frames (every ~300 ms) skip that and patch only
// the numbers of the rows they name. A row's buttons follow the download's `actions`.
// The Library tab (library.js, libdata.js) keeps the files on disk apart from the store.

import { initAddForm } from './add.js';
import { initAuth } from './auth.js';
import { initLists, render, renderProgress, tickRetries } from './downloads.js';
import { connect, reconnectNow, setLive } from './events.js';
import { initHub } from './hub.js';
import { initLibrary } from './library.js';
import { refreshHistory } from './reads.js';
import { drawSparkline, sampleSpeed, updateStats } from './stats.js';
import { subscribe, subscribeProgress } from './store.js';
import { initTabs, showTab } from './tabs.js';

subscribe(render);
subscribe(updateStats);
subscribeProgress(renderProgress);
subscribeProgress(updateStats);

initAuth({
  onSaved: () => { reconnectNow(); refreshHistory(); },
  onForgotten: reconnectNow,
});
initLists();
initAddForm();
initTabs();
initHub();
initLibrary();

setLive(false);
render();
updateStats();
drawSparkline();
showTab(location.hash.slice(1));
setInterval(() => { sampleSpeed(); tickRetries(); }, 1000);
connect();
