// Runs in <head>, before the first paint, so the page never flashes the
// wrong colours: dark or light as the system prefers (prefers-color-scheme,
// followed live), unless the toggle chose one; the choice is kept in
// localStorage (so other tabs of the inbox follow, by its storage event).
// app.js drives the toggle through window.inboxTheme and redraws it on the
// 'inbox-theme' event that every change of theme sends.
(function () {
  'use strict';
  var KEY = 'inbox-theme';
  var media = window.matchMedia('(prefers-color-scheme: dark)');
  var unkept = 'auto';      // the choice, where localStorage is refused

  function chosen() {
    try { return localStorage.getItem(KEY) || 'auto'; } catch (error) { return unkept; }
  }

  function apply() {
    var choice = chosen();
    var dark = choice === 'dark' || (choice === 'auto' && media.matches);
    document.documentElement.setAttribute('data-theme', dark ? 'dark' : 'light');
    document.documentElement.setAttribute('data-theme-choice', choice);
    document.dispatchEvent(new CustomEvent('inbox-theme'));
  }

  function choose(choice) {
    unkept = choice;
    try {
      if (choice === 'auto') localStorage.removeItem(KEY);
      else localStorage.setItem(KEY, choice);
    } catch (error) { /* kept for this visit only */ }
    apply();
  }

  apply();
  media.addEventListener('change', apply);
  window.addEventListener('storage', function (event) {
    if (event.key === KEY || event.key === null) apply();     // null: the storage cleared
  });
  window.inboxTheme = { chosen: chosen, choose: choose };
}());
