/**
 * The words the attack families write a goal with: tool and argument names as verbs, objects and
 * nouns in English, German and French (vocabulary of the suites' tools, not of any task).
 */

export type Lang = 'en' | 'de' | 'fr';

const VERBS: Record<string, { noun: string; de: string; fr: string }> = {
  send: { noun: 'sending', de: 'senden', fr: 'envoyer' },
  delete: { noun: 'deletion', de: 'löschen', fr: 'supprimer' },
  create: { noun: 'creation', de: 'erstellen', fr: 'créer' },
  search: { noun: 'search', de: 'suchen', fr: 'rechercher' },
  reserve: { noun: 'reservation', de: 'reservieren', fr: 'réserver' },
  get: { noun: 'retrieval', de: 'abrufen', fr: 'récupérer' },
  update: { noun: 'update', de: 'ändern', fr: 'modifier' },
  read: { noun: 'reading', de: 'lesen', fr: 'lire' },
  post: { noun: 'posting', de: 'veröffentlichen', fr: 'publier' },
  invite: { noun: 'invitation', de: 'einladen', fr: 'inviter' },
  add: { noun: 'addition', de: 'hinzufügen', fr: 'ajouter' },
  remove: { noun: 'removal', de: 'entfernen', fr: 'retirer' },
  share: { noun: 'sharing', de: 'teilen', fr: 'partager' },
  append: { noun: 'addition', de: 'anhängen', fr: 'compléter' },
  cancel: { noun: 'cancellation', de: 'absagen', fr: 'annuler' },
  reschedule: { noun: 'rescheduling', de: 'verschieben', fr: 'reporter' },
  schedule: { noun: 'scheduling', de: 'planen', fr: 'programmer' },
  check: { noun: 'check', de: 'prüfen', fr: 'vérifier' },
  list: { noun: 'listing', de: 'auflisten', fr: 'lister' },
};

// Phrases first (longest match), then words; a word not here stays as it is.
const OBJECTS: Record<string, { de: string; fr: string }> = {
  'calendar event': { de: 'Kalendertermin', fr: 'événement du calendrier' },
  'calendar events': { de: 'Kalendertermine', fr: 'événements du calendrier' },
  'calendar event participants': { de: 'Teilnehmer des Kalendertermins', fr: "participants de l'événement" },
  'day calendar events': { de: 'Termine des Tages', fr: 'événements du jour' },
  'scheduled transaction': { de: 'geplante Überweisung', fr: 'virement programmé' },
  'scheduled transactions': { de: 'geplante Überweisungen', fr: 'virements programmés' },
  'most recent transactions': { de: 'letzte Überweisungen', fr: 'derniers virements' },
  'direct message': { de: 'Direktnachricht', fr: 'message direct' },
  'channel message': { de: 'Kanalnachricht', fr: 'message sur le canal' },
  'channel messages': { de: 'Kanalnachrichten', fr: 'messages du canal' },
  'user information': { de: 'Nutzerdaten', fr: "informations de l'utilisateur" },
  'user info': { de: 'Nutzerdaten', fr: "informations de l'utilisateur" },
  'user to slack': { de: 'Nutzer zu Slack', fr: "l'utilisateur sur Slack" },
  'user from slack': { de: 'Nutzer aus Slack', fr: "l'utilisateur de Slack" },
  'user to channel': { de: 'Nutzer zum Kanal', fr: "l'utilisateur au canal" },
  'users in channel': { de: 'Nutzer im Kanal', fr: 'utilisateurs du canal' },
  'hotels prices': { de: 'Hotelpreise', fr: 'prix des hôtels' },
  'all hotels in city': { de: 'alle Hotels der Stadt', fr: 'tous les hôtels de la ville' },
  'all restaurants in city': { de: 'alle Restaurants der Stadt', fr: 'tous les restaurants de la ville' },
  'car rental': { de: 'Mietwagen', fr: 'voiture de location' },
  'to file': { de: 'an die Datei', fr: 'au fichier' },
  'received emails': { de: 'empfangene E-Mails', fr: 'e-mails reçus' },
  'sent emails': { de: 'gesendete E-Mails', fr: 'e-mails envoyés' },
  'unread emails': { de: 'ungelesene E-Mails', fr: 'e-mails non lus' },
  'draft emails': { de: 'E-Mail-Entwürfe', fr: 'brouillons' },
  money: { de: 'Geld', fr: "de l'argent" },
  email: { de: 'E-Mail', fr: 'un e-mail' },
  emails: { de: 'E-Mails', fr: 'les e-mails' },
  file: { de: 'Datei', fr: 'le fichier' },
  files: { de: 'Dateien', fr: 'les fichiers' },
  hotel: { de: 'Hotel', fr: "l'hôtel" },
  password: { de: 'Passwort', fr: 'le mot de passe' },
  channels: { de: 'Kanäle', fr: 'les canaux' },
  webpage: { de: 'Webseite', fr: 'la page web' },
  balance: { de: 'Kontostand', fr: 'le solde' },
  iban: { de: 'IBAN', fr: "l'IBAN" },
  inbox: { de: 'Posteingang', fr: 'la boîte de réception' },
  restaurant: { de: 'Restaurant', fr: 'le restaurant' },
  contacts: { de: 'Kontakte', fr: 'les contacts' },
  transaction: { de: 'Überweisung', fr: 'un virement' },
};

const ARGS: Record<string, { de: string; fr: string }> = {
  recipient: { de: 'Empfänger', fr: 'destinataire' },
  recipients: { de: 'Empfänger', fr: 'destinataires' },
  amount: { de: 'Betrag', fr: 'montant' },
  subject: { de: 'Betreff', fr: 'objet' },
  body: { de: 'Text', fr: 'message' },
  content: { de: 'Inhalt', fr: 'contenu' },
  date: { de: 'Datum', fr: 'date' },
  file_id: { de: 'Datei-ID', fr: 'identifiant du fichier' },
  email_id: { de: 'E-Mail-ID', fr: "identifiant de l'e-mail" },
  event_id: { de: 'Termin-ID', fr: "identifiant de l'événement" },
  id: { de: 'ID', fr: 'identifiant' },
  participants: { de: 'Teilnehmer', fr: 'participants' },
  start_time: { de: 'Beginn', fr: 'début' },
  end_time: { de: 'Ende', fr: 'fin' },
  title: { de: 'Titel', fr: 'titre' },
  description: { de: 'Beschreibung', fr: 'description' },
  location: { de: 'Ort', fr: 'lieu' },
  query: { de: 'Suchbegriff', fr: 'recherche' },
  sender: { de: 'Absender', fr: 'expéditeur' },
  hotel: { de: 'Hotel', fr: 'hôtel' },
  hotel_names: { de: 'Hotelnamen', fr: 'noms des hôtels' },
  start_day: { de: 'Anreise', fr: 'arrivée' },
  end_day: { de: 'Abreise', fr: 'départ' },
  city: { de: 'Stadt', fr: 'ville' },
  password: { de: 'Passwort', fr: 'mot de passe' },
  channel: { de: 'Kanal', fr: 'canal' },
  url: { de: 'Adresse', fr: 'adresse' },
  user: { de: 'Nutzer', fr: 'utilisateur' },
  user_email: { de: 'E-Mail-Adresse', fr: 'adresse e-mail' },
  filename: { de: 'Dateiname', fr: 'nom du fichier' },
  file_path: { de: 'Datei', fr: 'fichier' },
  permission: { de: 'Berechtigung', fr: 'droit' },
  recurring: { de: 'wiederkehrend', fr: 'récurrent' },
};

function objectWords(words: string[], lang: Exclude<Lang, 'en'>): string {
  const out: string[] = [];
  for (let i = 0; i < words.length; ) {
    let n = words.length - i;
    for (; n > 0; n--) if (OBJECTS[words.slice(i, i + n).join(' ')]) break;
    if (n === 0) {
      out.push(words[i]!);
      i++;
    } else {
      out.push(OBJECTS[words.slice(i, i + n).join(' ')]![lang]);
      i += n;
    }
  }
  return out.join(' ');
}

/** What a call does, in words: "send money", "Geld senden", "envoyer de l'argent". */
export function action(fn: string, lang: Lang): string {
  const [verb = fn, ...rest] = fn.split('_');
  const v = VERBS[verb];
  if (lang === 'en') return [verb, ...rest].join(' ');
  const obj = objectWords(rest, lang);
  if (lang === 'de') return `${obj} ${v?.de ?? verb}`.trim();
  return `${v?.fr ?? verb} ${obj}`.trim();
}

/** The same as a noun phrase, for statements: "the sending of money". */
export const nominal = (fn: string): string => {
  const [verb = fn, ...rest] = fn.split('_');
  return `the ${VERBS[verb]?.noun ?? verb}${rest.length ? ` of ${rest.join(' ')}` : ''}`;
};

export const argName = (name: string, lang: Lang): string => (lang === 'en' ? name.replace(/_/g, ' ') : (ARGS[name]?.[lang] ?? name.replace(/_/g, ' ')));
