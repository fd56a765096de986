# Writes kugetsu.1 with help2man from the built command's own help text: `kugetsu --help`
# and `--version`, plus one section per command from `kugetsu COMMAND --help`, so the man
# page says what the binary does. Run by cli/CMakeLists.txt:
#   cmake -DKUGETSU=<binary> -DHELP2MAN=<help2man> -DEXTRA=<kugetsu.h2m> -DOUT=<kugetsu.1> -P manpage.cmake
foreach(v KUGETSU HELP2MAN EXTRA OUT)
    if(NOT DEFINED ${v})
        message(FATAL_ERROR "manpage.cmake: -D${v}=... is required")
    endif()
endforeach()

execute_process(COMMAND ${KUGETSU} --help OUTPUT_VARIABLE help RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${KUGETSU} --help exited ${rc}")
endif()
# The commands: the lines of the "Subcommands:" block.
string(REGEX MATCH "Subcommands:\n(.*)" block "${help}")
string(REPLACE "\n" ";" lines "${CMAKE_MATCH_1}")
set(commands "")
foreach(line IN LISTS lines)
    if(line MATCHES "^  ([a-z][a-z-]*) ")
        list(APPEND commands ${CMAKE_MATCH_1})
    endif()
endforeach()
if(NOT commands)
    message(FATAL_ERROR "no commands in the output of ${KUGETSU} --help")
endif()

set(include "[COMMANDS]\n")
foreach(c IN LISTS commands)
    execute_process(COMMAND ${KUGETSU} ${c} --help OUTPUT_VARIABLE text RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "${KUGETSU} ${c} --help exited ${rc}")
    endif()
    # roff: a backslash is \e; a line starting with '.' or "'" would be a request.
    string(REPLACE "\\" "\\e" text "${text}")
    string(REGEX REPLACE "(^|\n)([.'])" "\\1\\\\&\\2" text "${text}")
    string(APPEND include ".SS ${c}\n.nf\n${text}.fi\n")
endforeach()
file(READ ${EXTRA} extra)
get_filename_component(dir ${OUT} DIRECTORY)
file(WRITE ${dir}/kugetsu-commands.h2m "${include}")
execute_process(COMMAND ${HELP2MAN} --no-info --no-discard-stderr --section=1
                        "--name=run agents for queued tasks, never more at once than a cap"
                        --include=${dir}/kugetsu-commands.h2m --include=${EXTRA} --output=${OUT} ${KUGETSU}
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
    message(FATAL_ERROR "help2man exited ${rc}: ${err}")
endif()
