import { findPhoneNumbersInText } from 'libphonenumber-js/max';
for (const t of ["(415) 555-0132 (415) 555-0132 192.168.1.20", "(415) 555-0132 192.168.1.20", "415-555-0132 415-555-0133", "415 555 0132 415 555 0133", "(415) 555-0132 (415) 555-0133"]) console.log(t, '=>', findPhoneNumbersInText(t,'US').map(x=>t.slice(x.startsAt,x.endsAt)));
