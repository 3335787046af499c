(function () {
  const token = document.querySelector('meta[name=starbuild-token]').content;
  let generation = Number(document.body.dataset.generation);
  const active = new Set();

  function apply() {
    const q = (document.getElementById('search') || {value: ''}).value.trim().toLowerCase();
    document.querySelectorAll('[data-asset]').forEach(card => {
      const hit = (!q || card.dataset.search.includes(q)) &&
        [...active].every(flag => card.hasAttribute('data-' + flag));
      card.hidden = !hit;
    });
  }
  const search = document.getElementById('search');
  if (search) search.addEventListener('input', apply);
  document.querySelectorAll('.filter').forEach(btn => btn.addEventListener('click', () => {
    const flag = btn.dataset.filter;
    if (active.has(flag)) active.delete(flag); else active.add(flag);
    btn.classList.toggle('on', active.has(flag));
    apply();
  }));

  function notice(text) {
    const box = document.getElementById('notice');
    box.textContent = text; box.hidden = false;
  }

  async function act(action, body) {
    if (action === 'reroll' && !confirm('Reroll ' + body.name + '? This submits one new image (it may cost credits).')) return;
    notice(action + ' ' + body.name + ' ...');
    const r = await fetch('/api/' + action, {method: 'POST', headers: {'Content-Type': 'application/json',
      'X-Starbuild-Token': token}, body: JSON.stringify(body)});
    const answer = await r.json();
    notice(answer.message || answer.error);
    if (r.ok) location.reload();
  }
  document.querySelectorAll('.action').forEach(btn => btn.addEventListener('click', () => {
    const body = {name: btn.dataset.name};
    if (btn.dataset.take !== undefined) body.take = Number(btn.dataset.take);
    act(btn.dataset.action, body);
  }));
  document.addEventListener('keydown', ev => {
    if (ev.target.tagName === 'INPUT' || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const card = document.querySelector('.candidate[data-key="' + ev.key + '"]');
    if (card) card.querySelector('.action').click();
  });

  async function poll() {
    try {
      const s = await (await fetch('/api/state')).json();
      if (s.generation !== generation) { location.reload(); return; }
      document.querySelectorAll('[data-live]').forEach(tag => {
        const live = s.live[tag.dataset.live];
        tag.hidden = !live; tag.textContent = live || '';
      });
    } catch (e) {}
    setTimeout(poll, 1000);
  }
  setTimeout(poll, 1000);
})();
