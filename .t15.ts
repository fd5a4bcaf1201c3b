import { findPhoneNumbersInText } from 'libphonenumber-js/max';
for (const t of ["+44 20 7946 0958 (", "(415) 555-0132 3", "0958 (415) 555-0132 3782", "(415) 555-0132 [RED"]) console.log(JSON.stringify(t), '=>', findPhoneNumbersInText(t,'US').map(x=>t.slice(x.startsAt,x.endsAt)));
