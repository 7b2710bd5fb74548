// Asks for the list the page will show first at once, while the modules
// still load: on a full inbox the first rows wait for this request, and
// the modules (app.js and what it imports) are parsed and run meanwhile.
// An async classic script, so neither the style sheet nor the modules
// hold it back. list.js takes the answer when it asks for the same path
// (the hash's search and page, as router.js reads them); a path that
// differs, or a request that failed, is asked again the usual way.
(function () {
  'use strict';
  var hash = location.hash.slice(1);
  var query = '';
  var start = 0;
  if (hash.indexOf('=') >= 0) {       // '#ID' alone (an old link) is the first page
    var params = new URLSearchParams(hash);
    query = params.get('q') || '';
    start = Math.max(0, parseInt(params.get('start') || '0', 10) || 0);
  }
  var paging = 'start=' + start + '&limit=50';
  var path = query ? 'api/v1/search?query=' + encodeURIComponent(query) + '&' + paging
    : 'api/v1/messages?' + paging;
  window.inboxEarly = {
    path: path,
    response: fetch(path).catch(function () { return null; }),
  };
}());
