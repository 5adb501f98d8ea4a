import t from 'tap';
import { toCelContext } from '../../src/engine/cel-env.js';
import { fieldName, signalGroups } from '../../src/engine/signals.js';

const intSignals = [...signalGroups()].flatMap(([group, fields]) =>
  fields.filter((spec) => spec.type === 'int').map((spec) => ({ name: spec.name, group, field: fieldName(spec) })),
);

t.test(
  'an int signal reaches CEL as BigInt(Math.trunc(n)) for every kind of number, shared small values included',
  async (t) => {
    t.ok(intSignals.length >= 5, `${intSignals.length} int signals`);
    const numbers = [
      0,
      -0,
      1,
      2.7,
      -2.7,
      1023,
      1023.999,
      1024,
      1025,
      -1,
      -1023,
      29518,
      2 ** 31,
      2 ** 53,
      -(2 ** 53),
      1e21,
      5e-324,
    ];
    let compared = 0;
    for (const { name, group, field } of intSignals)
      for (const n of numbers) {
        const context = toCelContext({ [name]: n } as never);
        const got = context[group]![field];
        t.equal(typeof got, 'bigint', `${name} = ${n}: a BigInt`);
        t.equal(got, BigInt(Math.trunc(n)), `${name} = ${n}`);
        compared += 1;
      }
    t.equal(compared, intSignals.length * numbers.length);
    for (const n of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY])
      t.throws(
        () => toCelContext({ [intSignals[0]!.name]: n } as never),
        RangeError,
        `${n} is refused as BigInt refuses it`,
      );
  },
);
