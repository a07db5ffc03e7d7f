/* switch.c: dense switches (clang emits br_table), a sparse one (compare chains) and a
 * switch-driven state machine.
 *
 * Exports and sample results:
 *   eval_op(0, 7, 3)       -> 10     (op 0..11 = add sub mul div rem and or xor shl shr min max; other ops -> -1;
 *                                     div/rem by zero return 0 instead of trapping)
 *   eval_op(8, 1, 5)       -> 32
 *   eval_op(99, 1, 1)      -> -1
 *   days_in_month(2, 2024) -> 29     (month 1..12 with leap years; other months -> 0)
 *   days_in_month(13, 2023)-> 0
 *   char_class(65)         -> 2      (0 other, 1 digit, 2 upper, 3 lower, 4 space, 5 punctuation from a sparse set)
 *   char_class(63)         -> 5
 *   count_runs(0x0ff00f0f) -> 6      (a state machine over the 32 bits, LSB first: runs of equal bits that are 4+ long)
 *   roman_length(1994)      -> 7      (length of the Roman numeral for 1..3999, built digit by digit via a switch; 0 otherwise)
 */

int eval_op(int op, int a, int b) {
    switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return b == 0 ? 0 : a / b;
    case 4: return b == 0 ? 0 : a % b;
    case 5: return a & b;
    case 6: return a | b;
    case 7: return a ^ b;
    case 8: return a << (b & 31);
    case 9: return a >> (b & 31);
    case 10: return a < b ? a : b;
    case 11: return a > b ? a : b;
    default: return -1;
    }
}

int days_in_month(int month, int year) {
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    switch (month) {
    case 1: case 3: case 5: case 7: case 8: case 10: case 12:
        return 31;
    case 4: case 6: case 9: case 11:
        return 30;
    case 2:
        return leap ? 29 : 28;
    default:
        return 0;
    }
}

int char_class(int c) {
    switch (c) {
    case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        return 1;
    case ' ': case '\t': case '\n': case '\r':
        return 4;
    case '!': case '?': case '.': case ',': case ';': case ':':
        return 5;
    default:
        if (c >= 'A' && c <= 'Z') return 2;
        if (c >= 'a' && c <= 'z') return 3;
        return 0;
    }
}

enum run_state { START, IN_RUN, COUNTED };

int count_runs(int bits) {
    unsigned value = (unsigned)bits;
    enum run_state state = START;
    int previous = -1, length = 0, runs = 0;
    for (int i = 0; i < 32; i++) {
        int bit = (value >> i) & 1;
        if (bit != previous) {
            state = START;
            length = 0;
            previous = bit;
        }
        length++;
        switch (state) {
        case START:
            state = IN_RUN;
            /* fall through: a run of length 1 may already be long enough */
        case IN_RUN:
            if (length >= 4) {
                runs++;
                state = COUNTED;
            }
            break;
        case COUNTED:
            break;
        }
    }
    return runs;
}

static int roman_digit_length(int digit) {
    switch (digit) {
    case 0: return 0;
    case 1: return 1;   /* I    */
    case 2: return 2;   /* II   */
    case 3: return 3;   /* III  */
    case 4: return 2;   /* IV   */
    case 5: return 1;   /* V    */
    case 6: return 2;   /* VI   */
    case 7: return 3;   /* VII  */
    case 8: return 4;   /* VIII */
    case 9: return 2;   /* IX   */
    default: return -100;
    }
}

int roman_length(int n) {
    if (n < 1 || n > 3999)
        return 0;
    return roman_digit_length(n / 1000) + roman_digit_length(n / 100 % 10)
         + roman_digit_length(n / 10 % 10) + roman_digit_length(n % 10);
}
